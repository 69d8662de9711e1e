//! `veil-capture FILE.pcap [--host IP] [--offsets N] [--min-samples N] [--needle NAME=HEX]...`
//! prints the analysis of a capture as JSON (see the library docs).

use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use veil_capture::{analyse, parse_hex, udp_payloads, Needle};

#[derive(Parser)]
#[command(about = "What an observer of a link could key on, from a pcap")]
struct Args {
    /// The capture (pcap; Ethernet, Linux cooked or raw IP).
    file: PathBuf,
    /// Only UDP datagrams to or from this address.
    #[arg(long)]
    host: Option<IpAddr>,
    /// Byte offsets to analyse from the start of each UDP payload.
    #[arg(long, default_value_t = 64)]
    offsets: usize,
    /// An offset counts for the worst share only with this many datagrams long enough.
    #[arg(long, default_value_t = 200)]
    min_samples: usize,
    /// A byte string to look for, NAME=HEX (repeat).
    #[arg(long = "needle", value_name = "NAME=HEX")]
    needles: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut needles = Vec::new();
    for n in &args.needles {
        let Some((name, hex)) = n.split_once('=') else {
            eprintln!("veil-capture: --needle takes NAME=HEX, got `{n}`");
            return ExitCode::from(2);
        };
        let Some(bytes) = parse_hex(hex) else {
            eprintln!("veil-capture: --needle {name}: `{hex}` is not hex");
            return ExitCode::from(2);
        };
        needles.push(Needle {
            name: name.to_string(),
            bytes,
        });
    }
    let data = match std::fs::read(&args.file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("veil-capture: {}: {e}", args.file.display());
            return ExitCode::FAILURE;
        }
    };
    let payloads = match udp_payloads(&data, args.host) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("veil-capture: {}: {e}", args.file.display());
            return ExitCode::FAILURE;
        }
    };
    let report = analyse(&payloads, args.offsets, args.min_samples, &needles);
    match serde_json::to_string_pretty(&report) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("veil-capture: {e}");
            ExitCode::FAILURE
        }
    }
}
