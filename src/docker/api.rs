//! The remote network driver protocol (libnetwork's `drivers/remote/api`), with the field names
//! Go writes: as declared in its structs. Unknown fields are ignored (newer Dockers add some).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Docker's `-o KEY=VALUE` options of `docker network create`.
pub const GENERIC: &str = "com.docker.network.generic";
/// The published ports of an endpoint (`-p`).
pub const PORTMAP: &str = "com.docker.network.portmap";
/// `docker network create --internal`.
pub const INTERNAL: &str = "com.docker.network.internal";

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamData {
    #[serde(rename = "Pool", default)]
    pub pool: String,
    #[serde(rename = "Gateway", default)]
    pub gateway: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default)]
    pub options: Map<String, Value>,
    #[serde(rename = "IPv4Data", default, deserialize_with = "null_as_empty")]
    pub ipv4: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_as_empty")]
    pub ipv6: Vec<IpamData>,
}

/// Go encodes a nil slice as `null`.
fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The requests that name only a network (DeleteNetwork) or an endpoint (Leave, DeleteEndpoint,
/// RevokeExternalConnectivity, EndpointOperInfo).
#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndpointInterface {
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "AddressIPv6", default)]
    pub address_v6: String,
    #[serde(rename = "MacAddress", default)]
    pub mac: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterfaceName {
    #[serde(rename = "SrcName")]
    pub src_name: String,
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct JoinResponse {
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    /// Always set: without it Docker attaches the container to its own docker_gwbridge too and
    /// maps the ports there itself.
    #[serde(rename = "Gateway")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_v6: String,
    #[serde(rename = "DisableGatewayService")]
    pub disable_gateway_service: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProgramExternalConnectivity {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options", default)]
    pub options: Map<String, Value>,
}

/// One `-p` of `docker run` (libnetwork's types.PortBinding).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PortBinding {
    /// The IP protocol number: 6 TCP, 17 UDP, 132 SCTP.
    #[serde(rename = "Proto")]
    pub proto: u8,
    #[serde(rename = "Port")]
    pub port: u16,
    /// "" (or absent): every address.
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    /// 0: any free port.
    #[serde(rename = "HostPort", default)]
    pub host_port: u16,
    #[serde(rename = "HostPortEnd", default)]
    pub host_port_end: u16,
}

/// The error answer: Docker shows `Err` in the failing command's message.
pub fn error(msg: &str) -> String {
    serde_json::json!({ "Err": msg }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_as_docker_20_10_sends_them() {
        let c: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"4ecc","Options":{"com.docker.network.enable_ipv6":true,"com.docker.network.generic":{"netnat.allow":"1.2.3.0/24"}},"IPv4Data":[{"AddressSpace":"LocalDefault","Gateway":"10.77.0.1/24","Pool":"10.77.0.0/24"}],"IPv6Data":null}"#,
        )
        .unwrap();
        assert_eq!(
            (c.ipv4[0].pool.as_str(), c.ipv4[0].gateway.as_str(), c.ipv6.len()),
            ("10.77.0.0/24", "10.77.0.1/24", 0)
        );
        let p: ProgramExternalConnectivity = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":82,"HostIP":"","HostPort":9200,"HostPortEnd":9210}]}}"#,
        )
        .unwrap();
        let b: Vec<PortBinding> = serde_json::from_value(p.options[PORTMAP].clone()).unwrap();
        assert_eq!(b[0], PortBinding { proto: 6, port: 82, host_ip: "".into(), host_port: 9200, host_port_end: 9210 });
        let j = JoinResponse {
            interface_name: InterfaceName { src_name: "nnp1".into(), dst_prefix: "eth".into() },
            gateway: "10.77.0.1".into(),
            gateway_v6: String::new(),
            disable_gateway_service: true,
        };
        assert_eq!(
            serde_json::to_string(&j).unwrap(),
            r#"{"InterfaceName":{"SrcName":"nnp1","DstPrefix":"eth"},"Gateway":"10.77.0.1","DisableGatewayService":true}"#
        );
    }
}
