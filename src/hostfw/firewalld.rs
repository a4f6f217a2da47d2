//! firewalld, through its D-Bus interface (never firewall-cmd): a zone of netnat's own, `netnat`
//! (target ACCEPT, as Docker's `docker` and libvirt's `libvirt` zones), holding netnat's bridges
//! in the runtime and the permanent configuration, so it survives `firewall-cmd --reload` and a
//! firewalld restart. Connections to published ports need no policy: firewalld accepts
//! `ct status dnat` in its forward chain. The zone's description names netnat and each network.
//!
//! firewalld creates zones in its permanent configuration only; a new zone reaches the runtime
//! with a reload, so creating the zone (first network) and removing it (last network, `netnat
//! reset`) each cost one firewalld reload, as Docker's zone does. Binding or unbinding a bridge
//! changes the runtime directly.

use super::{marked_network, Driver, Held, Tables};
use crate::model::{HostFirewallKind, Network};
use anyhow::{Context, Result};
use dbus::arg::{PropMap, RefArg, Variant};
use dbus::blocking::{Connection, Proxy};
use dbus::Path;
use std::collections::BTreeMap;
use std::time::Duration;

const BUS_NAME: &str = "org.fedoraproject.FirewallD1";
const RUNTIME: &str = "/org/fedoraproject/FirewallD1";
const CONFIG: &str = "/org/fedoraproject/FirewallD1/config";
const ZONE_IFACE: &str = "org.fedoraproject.FirewallD1.zone";
const CONFIG_IFACE: &str = "org.fedoraproject.FirewallD1.config";
const CONFIG_ZONE_IFACE: &str = "org.fedoraproject.FirewallD1.config.zone";
/// netnat's zone.
pub const ZONE: &str = "netnat";
const DESCRIPTION: &str = "netnat's bridges (made by netnat; `netnat reset` removes this zone).";
/// A reload rebuilds firewalld's whole table: seconds on a busy host.
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Firewalld {
    conn: Connection,
}

impl Firewalld {
    /// Ok(None) when firewalld does not run (no system bus, or no owner of its bus name).
    pub fn connect() -> Result<Option<Firewalld>> {
        let Ok(conn) = Connection::new_system() else { return Ok(None) };
        let bus = conn.with_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", TIMEOUT);
        let (running,): (bool,) = bus
            .method_call("org.freedesktop.DBus", "NameHasOwner", (BUS_NAME,))
            .context("asking the system bus whether firewalld runs")?;
        Ok(running.then_some(Firewalld { conn }))
    }

    fn proxy<'a>(&'a self, path: &'a str) -> Proxy<'a, &'a Connection> {
        self.conn.with_proxy(BUS_NAME, path, TIMEOUT)
    }

    fn call<R: dbus::arg::ReadAll, A: dbus::arg::AppendAll>(
        &self,
        path: &str,
        iface: &str,
        method: &str,
        args: A,
    ) -> Result<R> {
        self.proxy(path).method_call(iface, method, args).with_context(|| format!("firewalld's D-Bus {iface}.{method}"))
    }

    fn runtime_zones(&self) -> Result<Vec<String>> {
        Ok(self.call::<(Vec<String>,), _>(RUNTIME, ZONE_IFACE, "getZones", ())?.0)
    }

    /// The permanent zone's object path, if it exists.
    fn permanent_zone(&self) -> Result<Option<Path<'static>>> {
        let (names,): (Vec<String>,) = self.call(CONFIG, CONFIG_IFACE, "getZoneNames", ())?;
        if !names.iter().any(|n| n == ZONE) {
            return Ok(None);
        }
        let (p,): (Path<'static>,) = self.call(CONFIG, CONFIG_IFACE, "getZoneByName", (ZONE,))?;
        Ok(Some(p))
    }

    fn permanent_settings(&self, zone: &Path) -> Result<(Vec<String>, String)> {
        let (s,): (PropMap,) = self.call(zone, CONFIG_ZONE_IFACE, "getSettings2", ())?;
        let interfaces = s
            .get("interfaces")
            .and_then(|v| v.0.as_iter())
            .map(|it| it.filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let description = s.get("description").and_then(|v| v.0.as_str()).unwrap_or_default().to_string();
        Ok((interfaces, description))
    }

    fn runtime_interfaces(&self) -> Result<Vec<String>> {
        if !self.runtime_zones()?.iter().any(|z| z == ZONE) {
            return Ok(vec![]);
        }
        Ok(self.call::<(Vec<String>,), _>(RUNTIME, ZONE_IFACE, "getInterfaces", (ZONE,))?.0)
    }

    fn reload(&self) -> Result<()> {
        self.call::<(), _>(RUNTIME, "org.fedoraproject.FirewallD1", "reload", ())
    }

    /// Writes the permanent zone's description: netnat's, and which network each bridge is.
    fn describe_networks(&self, zone: &Path, nets: &BTreeMap<String, String>) -> Result<()> {
        let mut s = PropMap::new();
        s.insert("description".into(), Variant(Box::new(description(nets)) as Box<dyn RefArg>));
        self.call::<(), _>(zone, CONFIG_ZONE_IFACE, "update2", (s,))
    }
}

/// The zone's description: what it is, then `netnat network NAME: bridge BR;` per bridge
/// (firewalld keeps it as one line).
fn description(nets: &BTreeMap<String, String>) -> String {
    let mut d = DESCRIPTION.to_string();
    for (bridge, net) in nets {
        d += &format!(" {}: bridge {bridge};", super::mark(net));
    }
    d
}

/// bridge -> network, from the zone's description (names hold no spaces, colons or semicolons).
fn described(d: &str) -> BTreeMap<String, String> {
    d.split(';')
        .filter_map(|part| {
            let at = part.find(&super::mark(""))?;
            let (mark, bridge) = part[at..].split_once(": bridge ")?;
            Some((bridge.trim().to_string(), marked_network(mark)?.to_string()))
        })
        .collect()
}

impl Driver for Firewalld {
    fn kind(&self) -> HostFirewallKind {
        HostFirewallKind::Firewalld
    }

    fn opened(&mut self, _: &mut dyn Tables) -> Result<BTreeMap<String, Held>> {
        let Some(zone) = self.permanent_zone()? else {
            // A runtime-only zone of this name cannot exist in firewalld (zones are permanent).
            return Ok(BTreeMap::new());
        };
        let (permanent, desc) = self.permanent_settings(&zone)?;
        let nets = described(&desc);
        let runtime = self.runtime_interfaces()?;
        let mut out = BTreeMap::new();
        for b in permanent.iter().chain(&runtime).chain(nets.keys()) {
            let complete = permanent.contains(b) && runtime.contains(b) && nets.contains_key(b);
            let network = nets.get(b).cloned().unwrap_or_default();
            out.insert(b.clone(), Held { network, complete });
        }
        Ok(out)
    }

    fn open(&mut self, _: &mut dyn Tables, net: &Network) -> Result<()> {
        let b = net.bridge.as_str();
        let zone = match self.permanent_zone()? {
            Some(z) => z,
            None => {
                let mut s = PropMap::new();
                let mut put = |k: &str, v: Box<dyn RefArg>| s.insert(k.into(), Variant(v));
                put("target", Box::new("ACCEPT".to_string()));
                put("short", Box::new("netnat".to_string()));
                put("description", Box::new(description(&[(b.to_string(), net.name.clone())].into())));
                put("interfaces", Box::new(vec![b.to_string()]));
                let (z,): (Path<'static>,) =
                    self.call(CONFIG, CONFIG_IFACE, "addZone2", (ZONE, s)).context("creating firewalld zone netnat")?;
                z
            }
        };
        let (permanent, desc) = self.permanent_settings(&zone)?;
        let mut nets = described(&desc);
        if nets.get(b) != Some(&net.name) {
            nets.insert(b.to_string(), net.name.clone());
            self.describe_networks(&zone, &nets)?;
        }
        if !permanent.iter().any(|i| i == b) {
            self.call::<(), _>(&zone, CONFIG_ZONE_IFACE, "addInterface", (b,))?;
        }
        if !self.runtime_zones()?.iter().any(|z| z == ZONE) {
            // The permanent zone (with its bridges) reaches the runtime by a reload only.
            self.reload().context("reloading firewalld to make zone netnat")?;
        }
        let (now,): (String,) = self.call(RUNTIME, ZONE_IFACE, "getZoneOfInterface", (b,))?;
        if now != ZONE {
            self.call::<(String,), _>(RUNTIME, ZONE_IFACE, "changeZoneOfInterface", (ZONE, b))?;
        }
        Ok(())
    }

    fn close(&mut self, _: &mut dyn Tables, bridge: &str) -> Result<()> {
        if self.runtime_interfaces()?.iter().any(|i| i == bridge) {
            self.call::<(String,), _>(RUNTIME, ZONE_IFACE, "removeInterface", (ZONE, bridge))?;
        }
        if let Some(zone) = self.permanent_zone()? {
            let (permanent, desc) = self.permanent_settings(&zone)?;
            if permanent.iter().any(|i| i == bridge) {
                self.call::<(), _>(&zone, CONFIG_ZONE_IFACE, "removeInterface", (bridge,))?;
            }
            let mut nets = described(&desc);
            if nets.remove(bridge).is_some() {
                self.describe_networks(&zone, &nets)?;
            }
        }
        Ok(())
    }

    fn tidy(&mut self) -> Result<()> {
        let Some(zone) = self.permanent_zone()? else { return Ok(()) };
        let (interfaces, desc) = self.permanent_settings(&zone)?;
        // Only netnat's own zone, and only once it holds nothing.
        if !desc.starts_with(DESCRIPTION) || !interfaces.is_empty() {
            return Ok(());
        }
        self.call::<(), _>(&zone, CONFIG_ZONE_IFACE, "remove", ()).context("removing firewalld zone netnat")?;
        if self.runtime_zones()?.iter().any(|z| z == ZONE) {
            self.reload().context("reloading firewalld to drop zone netnat")?;
        }
        Ok(())
    }

    fn describe(&self, bridge: &str) -> String {
        format!("interface {bridge} in zone {ZONE} (runtime and permanent)")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn description_round_trips() {
        let nets = [("br1".to_string(), "n1".to_string()), ("br2".to_string(), "n-2".to_string())].into();
        let d = super::description(&nets);
        assert!(d.starts_with(super::DESCRIPTION));
        assert_eq!(super::described(&d), nets);
    }
}
