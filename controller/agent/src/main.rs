//! `sluice`: the node agent and the tools to look inside the datapath it programs.

mod acceleration;
mod agent;
mod cli;
mod cluster_status;
mod crash;
mod dump;
mod election;
mod events;
mod explain;
mod health;
mod http;
mod metrics;
mod monitor;
mod netinfo;
mod node_status;
mod probes;
mod sync;
mod usage;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub const DEFAULT_BPF_ROOT: &str = "/sys/fs/bpf/sluice";

#[derive(Parser)]
#[command(name = "sluice", version, about = "eBPF kube-proxy replacement")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: watch Services and EndpointSlices, program the datapath.
    Agent(Box<agent::AgentArgs>),
    /// Inspect the programmed services.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Show the programs, maps and datapath counters.
    Status(ReadArgs),
    /// What will the datapath do with a connection to ADDR:PORT[/PROTO], and why?
    Explain(explain::ExplainArgs),
    /// Stream what the datapath decides, live: translations, rejects and drops with reasons.
    Monitor(monitor::MonitorArgs),
    /// Remove the datapath from this node: detach every program (unpin the links) and unpin
    /// every map under --bpf-root, as kube-proxy's --cleanup. Stop the agent first, or it
    /// attaches again.
    Cleanup(CleanupArgs),
    /// Look at the BPF maps themselves.
    Bpf {
        #[command(subcommand)]
        command: BpfCommand,
    },
}

#[derive(Subcommand)]
enum BpfCommand {
    /// Every entry of one pinned map, decoded, one JSON object a line.
    Dump(dump::DumpArgs),
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// List every frontend with its backends, read from the pinned maps.
    List(ReadArgs),
}

#[derive(clap::Args)]
pub struct CleanupArgs {
    /// Where the agent pinned its maps and links.
    #[arg(long, default_value = DEFAULT_BPF_ROOT)]
    pub bpf_root: PathBuf,
    /// Remove even while the agent that wrote these pins still runs (it would attach again).
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
pub struct ReadArgs {
    /// Where the agent pinned its maps.
    #[arg(long, default_value = DEFAULT_BPF_ROOT)]
    pub bpf_root: PathBuf,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

fn main() -> std::process::ExitCode {
    // `sluice bpf dump ... | head` must end quietly when the reader leaves, like any Unix tool.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => agent::main(*args),
        Command::Service { command: ServiceCommand::List(args) } => cli::service_list(&args),
        Command::Status(args) => cli::status(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Monitor(args) => monitor::run(&args),
        Command::Cleanup(args) => cli::cleanup(&args),
        Command::Bpf { command: BpfCommand::Dump(args) } => dump::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
