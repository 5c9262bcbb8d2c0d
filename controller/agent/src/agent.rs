//! The node agent: load and attach the datapath (reusing whatever an earlier run pinned),
//! then plan and reconcile whenever the sources report a change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_core::NodeContext;
use sluice_datapath::{BpfMaps, Reconciler, loader};
use sluice_k8s::{Shared, manifests, watch};
use tokio::signal::unix::{SignalKind, signal};

use crate::DEFAULT_BPF_ROOT;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Standalone mode: read Services and EndpointSlices from YAML files in this directory
    /// (re-read on change) instead of a kube-apiserver.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig to use; without it, $KUBECONFIG, ~/.kube/config or the in-cluster config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The cgroup v2 directory whose processes get socket load-balancing [default: the cgroup v2 mount]
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,
    /// Where maps and program links are pinned (on a bpffs).
    #[arg(long, default_value = DEFAULT_BPF_ROOT)]
    pub bpf_root: PathBuf,
    /// This node's name, for node-local endpoint selection.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Where the Lease electing the agent that writes the shared objects' status lives (the
    /// chart passes its release namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// The node's external devices, where NodePort/ExternalIP/LoadBalancer traffic is handled by
    /// tc and XDP [default: the device of the default route; none: no north-south datapath]
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Addresses NodePorts are served on, also the SNAT source for remote backends
    /// [default: the IPv4 and global IPv6 addresses of the devices]
    #[arg(long, value_delimiter = ',')]
    pub node_ip: Vec<std::net::IpAddr>,
    /// Translate NodePort/LoadBalancer traffic to remote backends in XDP: disabled, native
    /// (fail unless the driver runs XDP) or best-effort.
    #[arg(long, value_enum, default_value_t = AccelerationArg::Disabled)]
    pub nodeport_acceleration: AccelerationArg,
    /// Where /metrics is served: the node's loopback by default, as kube-proxy's (0.0.0.0:10249
    /// for a Prometheus that scrapes node addresses).
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: std::net::SocketAddr,
    /// Where /healthz, /livez and /readyz are served (kube-proxy's port).
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: std::net::SocketAddr,
    /// NAMESPACE/NAME of the DaemonSet that runs this agent (watched). When the agent stops and
    /// that DaemonSet is gone or being deleted (helm uninstall), it removes its datapath, as
    /// `sluice cleanup` does; on any other stop (upgrade, restart, eviction) and whenever the
    /// watch has not said so, everything stays pinned and keeps serving.
    #[arg(long)]
    pub owner_daemonset: Option<OwnerDaemonSet>,
}

/// `--owner-daemonset NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerDaemonSet {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for OwnerDaemonSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(OwnerDaemonSet { namespace: ns.into(), name: name.into() }),
            _ => Err(format!("{s:?}: expected NAMESPACE/NAME")),
        }
    }
}

/// Whether to remove the datapath as the agent stops: the watch on the agent's DaemonSet saw it
/// go. Pods are deleted after their DaemonSet, so the event has normally arrived before SIGTERM;
/// a second's grace covers a slow watch (and is all a rolling upgrade waits per node). In that
/// second the DaemonSet is also asked for once, for a watch that was between two requests when
/// it went. Without an answer the datapath stays.
async fn owner_removed(removed: &std::sync::atomic::AtomicBool, ask: impl std::future::Future<Output = Option<bool>>) -> bool {
    let watched = async {
        while !removed.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!("the DaemonSet watch saw the agent's DaemonSet go");
    };
    let asked = async {
        match ask.await {
            Some(true) => tracing::info!("asked at stop: the agent's DaemonSet is gone or being deleted"),
            // Wait for the watch: a `false` may be older than the event it is about to deliver.
            _ => std::future::pending::<()>().await,
        }
    };
    tokio::time::timeout(Duration::from_secs(1), async {
        tokio::select! {
            () = watched => {},
            () = asked => {},
        }
    })
    .await
    .is_ok()
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelerationArg {
    Disabled,
    Native,
    BestEffort,
}

impl From<AccelerationArg> for loader::Acceleration {
    fn from(a: AccelerationArg) -> Self {
        match a {
            AccelerationArg::Disabled => loader::Acceleration::Disabled,
            AccelerationArg::Native => loader::Acceleration::Native,
            AccelerationArg::BestEffort => loader::Acceleration::BestEffort,
        }
    }
}

/// The north-south side: devices with tc and XDP, and the addresses NodePorts use.
struct NorthSouth {
    devices: Vec<String>,
    node_ips: Vec<std::net::IpAddr>,
    programs: Vec<sluice_crds::ProgramStatus>,
    device_status: Vec<sluice_crds::DeviceStatus>,
    /// The program the acceleration proof runs (None without devices).
    xdp_probe: Option<aya::programs::ProgramFd>,
    /// Kept alive so the programs stay owned by this agent generation (the links are pinned).
    _objects: Vec<aya::Ebpf>,
}

/// `before_attach` runs once the programs are loaded (verified), just before they are swapped in.
fn setup_north_south(args: &AgentArgs, root: &Path, before_attach: impl FnOnce(), after_attach: impl FnOnce()) -> anyhow::Result<NorthSouth> {
    let devices: Vec<String> = match args.devices.as_slice() {
        [] => crate::netinfo::default_route_device().into_iter().collect(),
        [none] if none == "none" => Vec::new(),
        list => list.to_vec(),
    };
    let mut node_ips = args.node_ip.clone();
    if node_ips.is_empty() {
        for d in &devices {
            node_ips.extend(crate::netinfo::device_addresses(d));
        }
    }
    if devices.is_empty() {
        tracing::info!("no devices (no default route and no --devices): NodePort, ExternalIP and LoadBalancer traffic is not handled");
        return Ok(NorthSouth { devices, node_ips, programs: Vec::new(), device_status: Vec::new(), xdp_probe: None, _objects: Vec::new() });
    }
    let accel: loader::Acceleration = args.nodeport_acceleration.into();
    let mut tc = loader::load_object(root, sluice_datapath::NODEPORT_OBJECT).context("loading the tc programs")?;
    let mut xdp = loader::load_object(root, sluice_datapath::XDP_OBJECT).context("loading the XDP program")?;
    let first = |v6: bool| node_ips.iter().find(|ip| ip.is_ipv6() == v6).map(|ip| sluice_abi::Addr::from(*ip)).unwrap_or_default();
    let config = sluice_abi::Config {
        node_ip4: first(false),
        node_ip6: first(true),
        flags: if accel == loader::Acceleration::Disabled { 0 } else { sluice_abi::CFG_F_XDP_ACCEL },
        pad: 0,
    };
    loader::write_config(&mut tc, config)?;
    let verifying = Instant::now();
    loader::load_north_south(&mut tc, &mut xdp).context("verifying the north-south programs")?;
    tracing::info!(ms = verifying.elapsed().as_millis() as u64, "north-south programs verified; swapping them in");
    before_attach();
    let mut programs = Vec::new();
    let mut device_status = Vec::new();
    for device in &devices {
        let reports = loader::attach_tc(&mut tc, root, device).with_context(|| format!("attaching tc on {device}"))?;
        let (xdp_report, native) = loader::attach_xdp(&mut xdp, root, device, accel).with_context(|| format!("attaching XDP on {device}"))?;
        tracing::info!(
            device,
            tc = ?reports.iter().map(|r| &r.how).collect::<Vec<_>>(),
            xdp = ?xdp_report.how,
            xdp_mode = if native { "native" } else { "generic" },
            acceleration = ?accel,
            "north-south programs in place"
        );
        for r in reports.iter().chain(std::iter::once(&xdp_report)) {
            programs.push(sluice_crds::ProgramStatus { name: r.program.into(), hook: r.hook.clone(), attached: true });
        }
        device_status.push(sluice_crds::DeviceStatus {
            name: device.clone(),
            xdp_mode: if native { "native" } else { "generic" }.into(),
            ..Default::default()
        });
        if !native && accel != loader::Acceleration::Disabled {
            tracing::warn!(device, "no native XDP on this device: acceleration runs in generic mode");
        }
    }
    // At once, before the programs below are loaded (their verification has taken long enough
    // under load for a connection established by the old programs meanwhile to time out).
    after_attach();
    tracing::info!(node_ips = ?node_ips, "NodePorts served on these addresses");
    // Counting what the kernel loses after XDP sent it needs the kernel's BTF; without it the
    // datapath works the same, the xdp_lost_* counters just stay at zero.
    let watch = match loader::attach_xdp_watch(root) {
        Ok((watch, reports)) => {
            programs.extend(reports.iter().map(|r| sluice_crds::ProgramStatus { name: r.program.into(), hook: r.hook.clone(), attached: true }));
            Some(watch)
        }
        Err(e) => {
            tracing::warn!("frames the kernel loses after XDP sent them are not counted (xdp_lost_*): {e}");
            None
        }
    };
    let xdp_probe = Some(loader::load_xdp_probe(&mut xdp).context("loading the XDP proof program")?);
    Ok(NorthSouth { devices, node_ips, programs, device_status, xdp_probe, _objects: [Some(tc), Some(xdp), watch].into_iter().flatten().collect() })
}

pub fn main(args: AgentArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=error,kube_runtime=error,kube_client=error,tower=warn,hyper=warn".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(run(args))
}

/// Keeps socket-LB's record of each network namespace's source address current (it judges
/// loadBalancerSourceRanges for pods and node processes by it), on a thread of its own: a new pod
/// is picked up within a second, whatever the sync loop is doing.
fn keep_source_addresses(root: &Path, cgroup: &Path, node_ips: Vec<std::net::IpAddr>) -> anyhow::Result<()> {
    let mut addrs = sluice_datapath::netns::SourceAddrs::open(root, cgroup).context("opening the network namespace addresses map")?;
    let root = root.to_path_buf();
    std::thread::Builder::new().name("netns-addrs".into()).spawn(move || {
        loop {
            // With hostNamespaceOnly, socket-LB leaves pods alone: their addresses are not needed.
            let pods = loader::read_config(&root).map_or(true, |c| c.flags & sluice_abi::CFG_F_HOST_NS_ONLY == 0);
            let r = addrs.refresh(&node_ips, pods);
            if r.added + r.removed > 0 {
                tracing::debug!(added = r.added, removed = r.removed, unreadable = r.failed, "network namespace source addresses updated");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })?;
    Ok(())
}

/// The map sizes to load with: the ProxyConfig's `mapSizes` as the agent starts (the maps are
/// resized before the programs are swapped in, their entries kept; a later change asks for a
/// restart). Without a ProxyConfig (or its CRD) the built-in sizes.
async fn map_capacities(client: &kube::Client) -> std::collections::BTreeMap<&'static str, u32> {
    let api: kube::Api<sluice_crds::ProxyConfig> = kube::Api::all(client.clone());
    match api.get_opt(sluice_crds::PROXY_CONFIG_NAME).await {
        Ok(config) => crate::sync::capacities_of(&config.map(|c| c.spec.map_sizes).unwrap_or_default()),
        Err(e) => {
            tracing::warn!("cannot read the ProxyConfig's mapSizes, starting with the built-in sizes: {e}");
            crate::sync::capacities_of(&sluice_crds::MapSizes::default())
        }
    }
}

/// Returns to the kernel the memory a full plan freed (the list pages, the previous layout): the
/// allocator keeps freed pages otherwise, and at 20,000 Services half of the resident memory
/// would be free space.
fn give_back_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The cgroup v2 mount point, read from /proc/mounts (hybrid hierarchies put it elsewhere
/// than /sys/fs/cgroup).
fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup2 filesystem is mounted; pass --cgroup-root")
}

fn raise_memlock() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.context("no kubeconfig and not in a cluster; pass --kubeconfig or --manifests")?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::crash::abort_on_panic();
    // Caught from the first moment: a SIGTERM while the programs load (a pod deleted as it
    // starts, by an uninstall right after an upgrade, say) would otherwise kill the process
    // outright, and an uninstall would leave the datapath behind. Taken once setup is done.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    raise_memlock();
    let cgroup = match &args.cgroup_root {
        Some(p) => p.clone(),
        None => cgroup2_mount()?,
    };
    if !cgroup.join("cgroup.procs").exists() {
        bail!("--cgroup-root {} is not a cgroup v2 directory", cgroup.display());
    }
    let root = args.bpf_root.clone();
    let client = match &args.manifests {
        Some(_) => None,
        None => Some(kube_client(args.kubeconfig.as_deref()).await?),
    };
    if let Some(client) = &client {
        let capacities = map_capacities(client).await;
        tracing::info!(?capacities, "map sizes");
        loader::set_capacities(capacities);
    }

    // The objects are read while the programs load (verifying them takes longer than listing
    // 10,000 Services, and neither needs the other); nothing is planned before both are done.
    let shared = Shared::default();
    let client_errors = Arc::new(watch::ClientErrors::default());
    let owner_removed_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = match (&args.manifests, &client) {
        (Some(dir), _) => {
            tracing::info!(dir = %dir.display(), "standalone mode: reading manifests");
            tokio::spawn(manifests::run(dir.clone(), shared.clone()))
        }
        (None, client) => {
            let client = client.clone().expect("a client in cluster mode");
            tracing::info!("cluster mode: watching Services, EndpointSlices and SourceBlocklists");
            if let Some(owner) = &args.owner_daemonset {
                tokio::spawn(watch::run_owner_daemonset(client.clone(), owner.namespace.clone(), owner.name.clone(), owner_removed_flag.clone()));
            }
            tokio::spawn(watch::run(client, args.node_name.clone(), shared.clone(), client_errors.clone()))
        }
    };

    // An agent that died while its programs took over resized conntrack tables left the old ones
    // offered to them: what those hold is copied, and they are let go (lookups that miss would
    // go on finding flows long over in them).
    match sluice_datapath::pins::release_previous_conntrack(&root, true) {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "finished a take-over of resized conntrack tables a previous agent left unfinished"),
        Err(e) => bail!("emptying the slots of replaced conntrack tables: {e}"),
    }
    // Before anything is loaded: the programs must find every pinned map in their own shape.
    let (pins, superseded) = sluice_datapath::pins::reconcile(&root).map_err(|e| anyhow::anyhow!("checking the pinned maps: {e}"))?;
    if !pins.removed.is_empty() {
        tracing::info!(removed = ?pins.removed, "removed the pins of maps this build does not have (another build's)");
    }
    let mut ebpf = loader::load_sock_lb(&root).context("loading the socket-LB programs")?;
    let mut maps = BpfMaps::open(&root)?;
    let reconciler = Reconciler::from_maps(&maps)?;
    let found = reconciler.found().expect("read at start");
    tracing::info!(
        bpf_root = %root.display(),
        services = found.revnat.len(),
        backends = found.backends.len(),
        "maps ready (entries found in pinned maps are kept until the first full plan)"
    );
    if maps.complete_port_filter(found, &root).context("filling the port filter")? {
        let filter = maps.port_filter().expect("completed above");
        tracing::info!(
            frontend_ports = filter.frontend.len(),
            local_backend_ports = filter.local_backend.len(),
            "port filter filled from the maps and conntrack: tc and XDP pass packets of no north-south port after one lookup"
        );
    }
    loader::write_host_netns(&root).context("recording the node's network namespace")?;
    let reports = loader::attach_sock_lb(&mut ebpf, &root, &cgroup).context("attaching socket hooks")?;
    let replaced = reports.iter().filter(|r| r.how == loader::Attachment::Replaced).count();
    tracing::info!(cgroup = %cgroup.display(), attached = reports.len() - replaced, replaced, "socket hooks in place");
    // Resized conntrack tables: the old programs go on adding and changing flows in the old
    // tables until the north-south links are swapped. So the new programs are given the old
    // tables, whose entries are newer than the copies made at reconcile, to take entries from
    // (sluice_abi.h, SLUICE_CT_PREVIOUS_*), from before the swap until, right after the last swap
    // (before anything else is loaded), what the old tables still hold is moved over and the
    // slots are emptied. The UDP and SCTP flows a build from
    // before the conntrack split kept with TCP's move to their own table meanwhile.
    let (split, caught_up) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let migration_error = std::cell::RefCell::new(None);
    let fail = |e: anyhow::Error| {
        migration_error.borrow_mut().get_or_insert(e);
    };
    let catch_up = || {
        caught_up.set(superseded.catch_up(&root));
        if let Err(e) = sluice_datapath::pins::release_previous_conntrack(&root, false) {
            fail(anyhow::anyhow!(e).context("emptying the slots of the replaced conntrack tables"));
        }
        match sluice_datapath::conntrack::split_non_tcp(&root, true) {
            Ok(n) => split.set(split.get() + n),
            Err(e) => fail(anyhow::Error::new(e).context("moving non-TCP conntrack entries to their table")),
        }
    };
    let mut north_south = setup_north_south(
        &args,
        &root,
        || {
            if let Err(e) = superseded.offer_conntrack(&root) {
                fail(anyhow::anyhow!(e).context("offering the replaced conntrack tables to the new programs"));
            }
            split.set(sluice_datapath::conntrack::split_non_tcp(&root, false).unwrap_or_default());
        },
        catch_up,
    )?;
    // Without devices nothing was swapped, and neither closure ran.
    if north_south.devices.is_empty() {
        catch_up();
    }
    if let Some(e) = migration_error.take() {
        return Err(e);
    }
    let (split, caught_up) = (split.get(), caught_up.get());
    drop(superseded);
    if split > 0 {
        tracing::info!(entries = split, "moved the UDP and SCTP flows of a build without separate conntrack tables to their table");
    }
    if !pins.reshaped.is_empty() {
        tracing::info!(reshaped = ?pins.reshaped, caught_up, "maps resized, their entries kept");
    }
    let accel_wanted = match north_south.xdp_probe.take() {
        Some(probe) => Some(
            crate::acceleration::start(root.clone(), probe, &north_south.devices, &north_south.node_ips, args.nodeport_acceleration.into())
                .context("starting the XDP acceleration proof")?,
        ),
        None => None,
    };
    let facts = Arc::new(std::sync::Mutex::new(crate::node_status::Facts::default()));
    {
        let mut f = facts.lock().expect("facts");
        f.programs = reports
            .iter()
            .map(|r| sluice_crds::ProgramStatus { name: r.program.into(), hook: r.hook.clone(), attached: true })
            .chain(north_south.programs.iter().cloned())
            .collect();
        f.devices = north_south.device_status.clone();
        f.features = vec!["bpf_link_cgroup".into()];
        if !north_south.devices.is_empty() {
            f.features.push("tcx".into());
        }
        f.features.extend(north_south.device_status.iter().map(|d| format!("xdp_{}:{}", d.xdp_mode, d.name)));
    }
    let mut keep = vec![loader::links_dir(&root, &cgroup)?];
    keep.extend(north_south.devices.iter().map(|d| loader::device_links(&root, d)));
    if !north_south.devices.is_empty() {
        keep.push(loader::xdp_watch_links(&root));
    }
    for old in loader::prune_links(&root, &keep)? {
        tracing::info!(links = %old.display(), "detached programs from a hook this agent no longer serves");
    }

    let usage = crate::usage::MapUsage::new(root.clone()).context("starting the map usage counter")?;
    usage.set_planned(sluice_datapath::report::with_pinned_capacities(&root, reconciler.found().expect("read at start").map_usage().to_vec()));
    let probes = Arc::new(crate::probes::Probes::default());
    let mut recorder: Option<Arc<kube::runtime::events::Recorder>> = None;
    if let Some(client) = &client {
        if let Some(node) = &args.node_name {
            tokio::spawn(crate::node_status::run(client.clone(), node.clone(), root.clone(), facts.clone(), usage.clone()));
            tokio::spawn(crate::cluster_status::run(client.clone(), node.clone(), args.lease_namespace.clone(), facts.clone()));
        }
        recorder = Some(Arc::new(kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter { controller: "sluice".into(), instance: args.node_name.clone() },
        )));
    }

    let metrics = Arc::new(crate::metrics::Metrics::new(usage.clone(), client_errors.clone())?);
    {
        let listener = crate::http::bind(args.metrics_bind_address, "--metrics-bind-address").await?;
        let metrics = metrics.clone();
        tokio::spawn(crate::http::serve(listener, move |path| {
            let metrics = metrics.clone();
            async move {
                match path.as_str() {
                    "/metrics" => crate::http::Response::new("200 OK", "text/plain; version=0.0.4", metrics.render()),
                    _ => crate::http::Response::new("404 Not Found", "text/plain", "not found\n".into()),
                }
            }
        }));
        let listener = crate::http::bind(args.healthz_bind_address, "--healthz-bind-address").await?;
        let probes = probes.clone();
        tokio::spawn(crate::http::serve(listener, move |path| {
            let probes = probes.clone();
            async move { probes.respond(&path) }
        }));
    }
    let node = NodeContext {
        node_name: args.node_name.clone(),
        node_ips: north_south.node_ips.clone(),
        external_ip_cidrs: None,
        maglev: false,
        zone: None,
        nodeport_bind_protection: true,
        service_slots: loader::capacity(sluice_abi::MAP_SERVICES).unwrap_or(sluice_abi::SERVICES_MAX) as usize,
    };
    let settings = crate::sync::Settings {
        flag_acceleration: args.nodeport_acceleration.into(),
        devices: north_south.device_status.clone(),
        node_ips: north_south.node_ips.clone(),
    };
    let mut syncer = crate::sync::Syncer::new(settings, reconciler, node, std::process::id());
    keep_source_addresses(&root, &cgroup, north_south.node_ips.clone())?;
    let mut node_maps = sluice_datapath::PinnedNodeMaps::new(root.clone(), cgroup.clone()).context("starting the housekeeping thread")?;
    let mut health = crate::health::HealthServers::new(probes.clone());
    let mut retry: Option<Instant> = None;
    let mut first_sync_done = false;
    loop {
        let retry_sleep = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.changed.notified() => {}
            _ = retry_sleep => {}
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        retry = None;
        probes.queued();
        let report = syncer.step(&shared.index, &mut maps, &mut node_maps);
        metrics.set_changes(report.events.0, report.events.1);
        if let Some(eligible) = report.node_eligible {
            probes.set_node_eligible(eligible);
        }
        let Some(config) = &report.config else {
            continue;
        };
        if let Some(w) = &accel_wanted {
            w.lock().expect("wanted").acceleration = config.acceleration;
        }
        for w in &report.new_warnings {
            tracing::warn!("{w}");
            if let Some(recorder) = &recorder {
                crate::events::publish(recorder.clone(), w.clone());
            }
        }
        health.update(&report.health_checks, config.health_check_addresses.as_deref());
        {
            let mut f = facts.lock().expect("facts");
            f.proxy_config = config.status.clone();
            f.block_generations = report.block_generations.clone();
        }
        match &report.outcome {
            crate::sync::Outcome::Waiting => {}
            crate::sync::Outcome::Synced(stats) => {
                if report.planned_in_full {
                    give_back_freed_memory();
                }
                {
                    let mut f = facts.lock().expect("facts");
                    f.block_owners = report.block_owners.clone().unwrap_or_default();
                    f.errors.clear();
                    f.last_sync =
                        Some(sluice_crds::SyncStatus { time: k8s_openapi::jiff::Timestamp::now().to_string(), duration_seconds: report.took.as_secs_f64() });
                }
                // What the maps hold, now that the sync landed.
                usage.set_planned(sluice_datapath::report::with_pinned_capacities(&root, syncer.desired().map_usage().to_vec()));
                // The proof's targets: walked only when acceleration is asked for and the plan
                // may have changed the backends.
                if let Some(w) = &accel_wanted {
                    let mut w = w.lock().expect("wanted");
                    if w.acceleration == loader::Acceleration::Disabled {
                        w.targets.clear();
                    } else if report.backends_changed || w.targets.is_empty() {
                        let targets = crate::acceleration::remote_targets(&syncer.desired().backends);
                        if w.targets != targets {
                            w.targets = targets;
                        }
                    }
                }
                let latency = report.pending_since.map(|t| t.elapsed());
                probes.updated();
                metrics.sync_duration.observe(report.took.as_secs_f64());
                if let Some(l) = latency {
                    metrics.programming_latency.observe(l.as_secs_f64());
                }
                if stats.writes + stats.deletes > 0 || !first_sync_done {
                    tracing::info!(
                        generation = report.generation,
                        frontends = report.frontends,
                        writes = stats.writes,
                        deletes = stats.deletes,
                        plan_ms = report.planned_in.as_secs_f64() * 1e3,
                        sync_ms = report.took.as_secs_f64() * 1e3,
                        programming_latency_ms = latency.map(|l| l.as_secs_f64() * 1e3),
                        "datapath synced"
                    );
                }
                first_sync_done = true;
            }
            crate::sync::Outcome::Failed(error) => {
                facts.lock().expect("facts").errors = vec![error.clone()];
                metrics.sync_errors.inc();
                tracing::error!("{error}; retrying in 1s");
                probes.attempted();
                retry = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
    source.abort();
    let errors = client_errors.0.load(std::sync::atomic::Ordering::Relaxed);
    let uninstalling = match (&args.owner_daemonset, &client, &args.manifests) {
        (Some(owner), Some(client), None) => {
            owner_removed(&owner_removed_flag, watch::owner_daemonset_gone(client.clone(), &owner.namespace, &owner.name)).await
        }
        _ => false,
    };
    if !uninstalling {
        tracing::info!(kube_client_errors = errors, "stopping; programs and maps stay pinned and keep serving");
        drop(ebpf);
        return Ok(());
    }
    tracing::info!("stopping, and the agent's DaemonSet is being removed: removing the datapath");
    drop(ebpf);
    let removed = loader::remove_pins(&root).context("removing the datapath")?;
    tracing::info!(pins = removed.len(), bpf_root = %root.display(), "datapath removed: programs detached, maps and links unpinned");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::owner_removed;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    async fn answer(after: Duration, gone: Option<bool>) -> Option<bool> {
        tokio::time::sleep(after).await;
        gone
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_saying_the_daemonset_went_is_enough() {
        assert!(owner_removed(&AtomicBool::new(true), answer(Duration::ZERO, None)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_missed_the_delete_is_made_up_for_by_asking() {
        assert!(owner_removed(&AtomicBool::new(false), answer(Duration::from_millis(200), Some(true))).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemonset_that_stays_or_no_answer_keeps_the_datapath() {
        assert!(!owner_removed(&AtomicBool::new(false), answer(Duration::from_millis(50), Some(false))).await);
        assert!(!owner_removed(&AtomicBool::new(false), answer(Duration::from_millis(50), None)).await);
        // An answer later than the second's grace is not waited for.
        assert!(!owner_removed(&AtomicBool::new(false), answer(Duration::from_secs(5), Some(true))).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_it_stays_does_not_cut_short_a_watch_event_on_its_way() {
        let flag = Arc::new(AtomicBool::new(false));
        let later = flag.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            later.store(true, Ordering::SeqCst);
        });
        assert!(owner_removed(&flag, answer(Duration::from_millis(10), Some(false))).await);
    }
}
