//! The bpf(2) commands aya 0.14 does not expose: pinned links, and running a program on a
//! frame of our own (packet tests, the proof that XDP's frames arrive, the programs' benchmark).

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// The XDP actions a run reports, and the flag that makes XDP_TX and redirects real.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// The kernel rejects (EINVAL) an attribute with a non-zero byte past the fields it knows, and
/// Rust leaves padding bytes as the stack had them: so the trailing four bytes are a field, zeroed.
/// Without it, opening a pinned link failed or not by what the stack held before the call.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

// Every attribute passed to bpf(2) here is all fields, no padding (see ObjGetAttr).
const _: () = assert!(std::mem::size_of::<ObjGetAttr>() == 8 + 4 * 4);
const _: () = assert!(std::mem::size_of::<LinkUpdateAttr>() == 4 * 4);
const _: () = assert!(std::mem::size_of::<TestRunAttr>() == 8 * 4 + 4 * 12);
const _: () = assert!(std::mem::size_of::<MapElemAttr>() == 4 * 2 + 8 * 3);
const _: () = assert!(std::mem::size_of::<GetFdByIdAttr>() == 4 * 3);
const _: () = assert!(std::mem::size_of::<InfoAttr>() == 4 * 2 + 8);

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// The `test` member of union bpf_attr.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it: the frame arrives on `ingress_ifindex`.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// struct __sk_buff up to `ifindex`: of these, a test run accepts only mark, priority and the
/// two devices set.
#[repr(C)]
#[derive(Default)]
struct SkBuffHead {
    len: u32,
    pkt_type: u32,
    mark: u32,
    queue_mapping: u32,
    protocol: u32,
    vlan_present: u32,
    vlan_tci: u32,
    vlan_proto: u32,
    priority: u32,
    ingress_ifindex: u32,
    ifindex: u32,
}

/// How a test run treats what the program does with the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// The program runs; its verdict and the frame as it left come back, nothing is sent.
    Dry,
    /// XDP only: XDP_TX and redirects really transmit (BPF_F_TEST_XDP_LIVE_FRAMES).
    Live,
}

/// Runs `prog` once on `frame`, optionally as if it arrived on `ingress_ifindex` (XDP, or
/// `ctx` for other program types). Returns the verdict and, in a dry run, the frame after.
pub fn prog_test_run(prog: BorrowedFd<'_>, frame: &[u8], ctx: TestContext<'_>, mode: RunMode) -> io::Result<(u32, Vec<u8>)> {
    test_run(prog, frame, ctx, mode, 1).map(|(verdict, out, _)| (verdict, out))
}

/// Runs `prog` `repeat` times on `frame` (dry): its verdict and the kernel's mean time of one
/// run in ns, what a benchmark of a program's own cost reads. Each run gets the frame as the
/// previous one left it.
pub fn prog_test_run_timed(prog: BorrowedFd<'_>, frame: &[u8], ctx: TestContext<'_>, repeat: u32) -> io::Result<(u32, u32)> {
    test_run(prog, frame, ctx, RunMode::Dry, repeat).map(|(verdict, _, ns)| (verdict, ns))
}

fn test_run(prog: BorrowedFd<'_>, frame: &[u8], ctx: TestContext<'_>, mode: RunMode, repeat: u32) -> io::Result<(u32, Vec<u8>, u32)> {
    let mut out = vec![0u8; if mode == RunMode::Dry { 4096 } else { 0 }];
    let (xdp_md, skb);
    let ctx_bytes: Option<&[u8]> = match ctx {
        TestContext::None => None,
        TestContext::Raw(bytes) => Some(bytes),
        TestContext::XdpIngress(ifindex) => {
            xdp_md = XdpMd { data_end: frame.len() as u32, ingress_ifindex: ifindex, ..Default::default() };
            // SAFETY: XdpMd is repr(C) plain integers; the slice lives as long as xdp_md.
            Some(unsafe { std::slice::from_raw_parts(&xdp_md as *const XdpMd as *const u8, size_of::<XdpMd>()) })
        }
        TestContext::Skb { ingress_ifindex, ifindex } => {
            skb = SkBuffHead { ingress_ifindex, ifindex, ..Default::default() };
            // SAFETY: SkBuffHead is repr(C) plain integers; the slice lives as long as skb.
            Some(unsafe { std::slice::from_raw_parts(&skb as *const SkBuffHead as *const u8, size_of::<SkBuffHead>()) })
        }
    };
    let mut attr =
        TestRunAttr { prog_fd: prog.as_raw_fd() as u32, data_size_in: frame.len() as u32, data_in: frame.as_ptr() as u64, repeat, ..Default::default() };
    if mode == RunMode::Dry {
        attr.data_size_out = out.len() as u32;
        attr.data_out = out.as_mut_ptr() as u64;
    } else {
        attr.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
    }
    if let Some(ctx) = ctx_bytes {
        attr.ctx_in = ctx.as_ptr() as u64;
        attr.ctx_size_in = ctx.len() as u32;
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate(attr.data_size_out as usize);
    Ok((attr.retval, out, attr.duration))
}

const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;

/// The head of the BPF_PROG_LOAD attribute, up to expected_attach_type.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 4 * 8 + 16 + 8 * 3);

/// A program of `prog_type` that returns `verdict` and does nothing else: the floor a
/// benchmark measures a real program's run time against (the cost of running any program).
pub fn load_verdict_only(prog_type: u32, verdict: i32) -> io::Result<OwnedFd> {
    // r0 = verdict; exit
    let mov_r0 = 0xb7u64 | (u64::from(verdict as u32) << 32);
    let insns: [u64; 2] = [mov_r0, 0x95];
    let license = c"GPL";
    let mut attr = ProgLoadAttr { prog_type, insn_cnt: 2, insns: insns.as_ptr() as u64, license: license.as_ptr() as u64, ..Default::default() };
    attr.prog_name[..12].copy_from_slice(b"sluice_floor");
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: BPF_PROG_LOAD returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The head of struct bpf_prog_info, up to the translated instructions.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// A loaded program's instructions as the kernel runs them (after the verifier's rewrites and
/// the prologue it may add), 8 bytes each.
pub fn prog_xlated(prog: BorrowedFd<'_>) -> io::Result<Vec<[u8; 8]>> {
    let info_of = |info: &mut ProgInfo| {
        let mut attr = InfoAttr { bpf_fd: prog.as_raw_fd() as u32, info_len: size_of::<ProgInfo>() as u32, info: info as *mut ProgInfo as u64 };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)
    };
    let mut info = ProgInfo::default();
    info_of(&mut info)?;
    let mut insns = vec![[0u8; 8]; info.xlated_prog_len as usize / 8];
    let len = info.xlated_prog_len;
    info = ProgInfo { xlated_prog_len: len, xlated_prog_insns: insns.as_mut_ptr() as u64, ..Default::default() };
    info_of(&mut info)?;
    insns.truncate(info.xlated_prog_len.min(len) as usize / 8);
    Ok(insns)
}

/// What a test run's frame arrives with.
#[derive(Debug, Clone, Copy)]
pub enum TestContext<'a> {
    None,
    /// The program type's own context struct, as bytes.
    Raw(&'a [u8]),
    /// XDP: arrived on this device of the caller's network namespace.
    XdpIngress(u32),
    /// tc: an skb that came in by device `ingress_ifindex` (0: made on this host) and is on
    /// device `ifindex` (0 or 1: the namespace's lo, the only one a run may name without it
    /// being up).
    Skb { ingress_ifindex: u32, ifindex: u32 },
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live, correctly laid-out bpf_attr prefix for `cmd`, sized by size_of.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Opens a pinned BPF object (here: a link) by its bpffs path.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr { pathname: c.as_ptr() as u64, ..Default::default() };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Swaps the program behind an attached link atomically: no moment without a program.
pub(crate) fn link_update(link: BorrowedFd<'_>, new_prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr { link_fd: link.as_raw_fd() as u32, new_prog_fd: new_prog.as_raw_fd() as u32, ..Default::default() };
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;

/// The element commands' attribute: map fd, key, value (or next key), flags.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Every key of a map, as bytes (`key_size` each), whatever its type: what a map of another
/// build's shape is read with. A map being written meanwhile may yield a key twice or miss one.
pub(crate) fn map_keys(map: BorrowedFd<'_>, key_size: usize) -> io::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut next = vec![0u8; key_size];
    let mut attr = MapElemAttr { map_fd: map.as_raw_fd() as u32, key: 0, value: next.as_mut_ptr() as u64, ..Default::default() };
    loop {
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
            Err(e) => return Err(e),
        }
        keys.push(next.clone());
        attr.key = keys.last().unwrap().as_ptr() as u64;
    }
}

/// One element's value as bytes, or None when the key is not there (any more).
pub(crate) fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value_size: usize) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; value_size];
    let mut attr = MapElemAttr { map_fd: map.as_raw_fd() as u32, key: key.as_ptr() as u64, value: value.as_mut_ptr() as u64, ..Default::default() };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes one element; a key not there is not an error.
pub(crate) fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    map_remove(map, key).map(|_| ())
}

/// Removes one element; whether it was there (and so removed by this call).
pub(crate) fn map_remove(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<bool> {
    let mut attr = MapElemAttr { map_fd: map.as_raw_fd() as u32, key: key.as_ptr() as u64, ..Default::default() };
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
        Ok(_) => Ok(true),
    }
}

/// The attribute of BPF_MAP_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Opens a map by its id (what a map-in-map slot reads as).
pub(crate) fn map_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr { id, ..Default::default() };
    let fd = bpf(BPF_MAP_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: BPF_MAP_GET_FD_BY_ID returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Writes one element (BPF_ANY).
pub(crate) fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr { map_fd: map.as_raw_fd() as u32, key: key.as_ptr() as u64, value: value.as_ptr() as u64, ..Default::default() };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}
