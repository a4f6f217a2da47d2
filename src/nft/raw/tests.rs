use super::*;
use crate::nft::expr::{
    cmp, load_ct_original_addr, load_ct_original_daddr, load_saddr, load_th_dport, match_ct_bits, match_daddr_local,
    match_ifname, match_nfproto, match_prefix, set_nftrace, CmpOp, Verdict, CT_DIRECTION, CT_MARK, CT_STATUS,
    CT_STATUS_DNAT, LOOKUP_F_INV, META_OIFNAME, NAT_DNAT, REG32_01, REG32_02, REG_1,
};
use crate::nft::family::{NFPROTO_IPV4, NFPROTO_IPV6};
use crate::nft::raw::dump::udata_comment;
use crate::nft::raw::expr::encode;
use crate::nft::raw::set::MAX_ELEMS_BYTES;
use crate::nft::Expr;
use nftnl::{MsgType, NlMsg};

/// One netlink message of `len` bytes written at the start of `buf`, as bytes.
fn bytes_of(buf: &[u32]) -> Vec<u8> {
    let len = buf[0] as usize; // nlmsg_len
    buf.iter().flat_map(|w| w.to_ne_bytes()).take(len).collect()
}

/// A NEWRULE message as the kernel would dump it: table, chain, handle, `exprs`, `comment`.
fn rule_message(exprs: &[Expr], comment: &str) -> Vec<u8> {
    let r = OwnedRule::new().unwrap();
    r.set_str(sys::NFTNL_RULE_TABLE, c"netnat").unwrap();
    r.set_str(sys::NFTNL_RULE_CHAIN, c"prerouting").unwrap();
    // SAFETY: the rule is live and owned here; the values are copied.
    unsafe {
        sys::nftnl_rule_set_u32(r.ptr(), sys::NFTNL_RULE_FAMILY as u16, libc::NFPROTO_INET as u32);
        sys::nftnl_rule_set_u64(r.ptr(), sys::NFTNL_RULE_HANDLE as u16, 42);
    }
    for e in exprs {
        let e = encode(e).unwrap();
        // SAFETY: both are live; the rule takes the expression over (`into_raw`).
        unsafe { sys::nftnl_rule_add_expr(r.ptr(), e.into_raw().as_ptr()) };
    }
    let mut ud = vec![sys::NFTNL_UDATA_RULE_COMMENT as u8, comment.len() as u8 + 1];
    ud.extend(comment.as_bytes());
    ud.push(0);
    let mut buf = vec![0u32; 1024];
    // SAFETY: the rule is live; `ud` is readable for its length and copied; `buf` is 4-byte
    // aligned and far larger than this message.
    unsafe {
        let rc =
            sys::nftnl_rule_set_data(r.ptr(), sys::NFTNL_RULE_USERDATA as u16, ud.as_ptr().cast(), ud.len() as u32);
        assert!(rc >= 0);
        let t = libc::NFT_MSG_NEWRULE as u16;
        let h = sys::nftnl_nlmsg_build_hdr(buf.as_mut_ptr().cast(), t, libc::NFPROTO_INET as u16, 0, 1);
        sys::nftnl_rule_nlmsg_build_payload(h, r.ptr());
    }
    bytes_of(&buf)
}

/// The message `msg` writes into a batch, as bytes.
fn written(msg: &impl NlMsg, t: MsgType) -> Vec<u8> {
    let mut buf = vec![0u32; 80 * 1024 / 4];
    // SAFETY: `buf` has room for one message of nft_nlmsg_maxsize() (about 64 KiB), as a batch does.
    unsafe { msg.write(buf.as_mut_ptr().cast(), 1, t) };
    bytes_of(&buf)
}

#[test]
fn every_expression_netnat_writes_reads_back_the_same() {
    let mut exprs = match_nfproto(NFPROTO_IPV6);
    exprs.extend(match_prefix(load_saddr(NFPROTO_IPV6, REG_1), "fd00:16::".parse().unwrap(), 64));
    exprs.extend(match_ifname(META_OIFNAME, CmpOp::Neq, "MyDocker0"));
    exprs.extend(match_ct_bits(CT_STATUS, CT_STATUS_DNAT));
    exprs.extend(match_daddr_local());
    exprs.push(load_ct_original_daddr(NFPROTO_IPV4, REG_1));
    exprs.push(load_th_dport(REG32_01));
    exprs.push(Expr::Lookup { sreg: REG_1, set: "pub_addr4".into(), dreg: Some(REG_1), flags: 0 });
    exprs.push(Expr::Lookup { sreg: REG_1, set: "routed6".into(), dreg: None, flags: LOOKUP_F_INV });
    exprs.push(Expr::Immediate { dreg: REG32_02, data: 8080u16.to_be_bytes().to_vec() });
    exprs.push(Expr::Nat { kind: NAT_DNAT, family: 10, addr: Some(REG_1), proto: Some(REG32_01) });
    exprs.push(Expr::Masquerade);
    exprs.push(load_ct_original_addr(NFPROTO_IPV6, false, REG_1));
    exprs.push(Expr::Ct { key: CT_DIRECTION, dreg: REG_1, dir: None });
    exprs.push(Expr::CtSet { key: CT_MARK, sreg: REG32_01 });
    exprs.extend(set_nftrace());
    exprs.push(Expr::Counter);
    exprs.push(Expr::Verdict(Verdict::Jump("guard".into())));
    exprs.push(Expr::Verdict(Verdict::Accept));
    let live = parse_rule(&rule_message(&exprs, "netnat: dnat")).unwrap();
    assert_eq!(live.exprs, exprs);
    assert_eq!((live.table.as_str(), live.chain.as_str(), live.handle), ("netnat", "prerouting", 42));
    assert_eq!(live.family, libc::NFPROTO_INET as u32);
    assert_eq!(live.comment.as_deref(), Some("netnat: dnat"));
}

#[test]
fn a_map_and_its_elements_read_back_the_same() {
    let desc = SetDesc {
        name: "pub_any6",
        id: 7,
        key_type: 781,
        key_len: 8,
        data: Some((0x1cd, 20)),
        counter: true,
        concat: None,
    };
    let set =
        parse_set(&written(&SetMsg::new(c"netnat", libc::NFPROTO_INET as u16, &desc).unwrap(), MsgType::Add)).unwrap();
    assert_eq!((set.table.as_str(), set.name.as_str(), set.family), ("netnat", "pub_any6", 1));
    assert_eq!((set.key_type, set.key_len, set.data, set.counter), (781, 8, Some((0x1cd, 20)), true));
    assert_eq!(set.flags, libc::NFT_SET_MAP as u32);
    // Elements one message each: libnftnl numbers the elements of a message it builds 1, 2, ...
    // while the kernel's dumps (and libnftnl's parser) number every one 1.
    let data = [0xfdu8, 0, 0, 0x16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 80, 0, 0];
    let keys: Vec<[u8; 8]> = [80u16, 443, 65535].iter().map(|p| [6, 0, 0, 0, (p >> 8) as u8, *p as u8, 0, 0]).collect();
    let mut live = vec![];
    for k in &keys {
        let msg =
            ElemsMsg::new(c"netnat", libc::NFPROTO_INET as u16, "pub_any6", &[(k, ElemData::Data(&data))]).unwrap();
        parse_elems(&written(&msg, MsgType::Add), &mut live).unwrap();
    }
    assert_eq!(live.len(), 3);
    assert!(live.iter().zip(&keys).all(|(l, k)| l.key == k && l.data == data && l.packets.is_none()), "{live:?}");
    // A full message (ELEMS_PER_MSG IPv6 elements) fits in what a batch gives one message.
    let elems: Vec<(&[u8], ElemData)> = (0..512).map(|_| (&keys[0][..], ElemData::Data(&data[..]))).collect();
    let full = written(&ElemsMsg::new(c"netnat", 1, "pub_any6", &elems).unwrap(), MsgType::Add);
    assert!(full.len() > 512 * 28 && full.len() < MAX_ELEMS_BYTES, "{} bytes", full.len());
}

#[test]
fn what_cannot_be_built_or_read_is_an_error() {
    let msg = rule_message(&[Expr::Counter], "c");
    for cut in [0, 3, 15, msg.len() - 1] {
        assert!(parse_rule(&msg[..cut]).is_err(), "a message cut at {cut} bytes was parsed");
    }
    assert!(parse_chain(&msg[..10]).is_err() && parse_set(&msg[..10]).is_err());
    assert!(parse_elems(&msg[..10], &mut vec![]).is_err());
    assert!(encode(&Expr::Other { name: "quota".into() }).err().unwrap().to_string().contains("quota"));
    assert!(encode(&cmp(REG_1, CmpOp::Eq, vec![0; 65])).is_err());
    let big = [0u8; 64];
    let elems: Vec<(&[u8], ElemData)> = (0..512).map(|_| (&big[..], ElemData::Data(&big[..]))).collect();
    let err = ElemsMsg::new(c"netnat", 1, "s", &elems).err().unwrap().to_string();
    assert!(err.contains("512 elements of set s"), "{err}");
    assert!(dump_request(DumpKind::Elems, 1, Some(c"netnat"), Some("a\0b")).is_err());
    assert!(dump_request(DumpKind::Elems, 1, Some(c"netnat"), Some("pub_any4")).is_ok());
    // A comment TLV that claims more bytes than there are.
    assert_eq!(udata_comment(&[sys::NFTNL_UDATA_RULE_COMMENT as u8, 9, b'a']), None);
}
