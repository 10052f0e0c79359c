//! `cargo run --example replay_run -- INPUT --inside ... --public-ip ... --lan-out ... --wan-out ...`:
//! `ftpnat replay` without the main binary (handy until and apart from `main.rs` wiring it).

fn main() -> std::process::ExitCode {
    match ftpnat::replay::cli::parse_args(std::env::args_os().skip(1)) {
        Ok(args) => ftpnat::replay::cli::cli_main(args),
        Err(e) => e.exit(),
    }
}
