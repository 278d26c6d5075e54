//! `palisade`: the control plane (`palisade serve`) and the operator CLI.
//! Only this binary touches argv, the environment, exit codes and signals.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use palisade::{Global, commands, demo, factory, output, serve};

/// Palisade: IoT fleet security platform — control plane and operator CLI.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the control plane (HTTPS API on 127.0.0.1:8443 by default).
    Serve(serve::ServeArgs),
    /// A demo: a server on its own data directory (palisade-demo), a simulated
    /// fleet of three models on two sites, a staged rollout and a few attacks;
    /// prints the console's URL and a sign-in.
    Demo(demo::DemoArgs),
    /// The demo's simulated fleet (started by `palisade demo`).
    #[command(hide = true)]
    DemoFleet(demo::FleetArgs),
    /// Device models.
    Model {
        #[command(subcommand)]
        cmd: commands::ModelCmd,
    },
    /// Devices in the inventory.
    Device {
        #[command(subcommand)]
        cmd: commands::DeviceCmd,
    },
    /// Issued certificates.
    Cert {
        #[command(subcommand)]
        cmd: commands::CertCmd,
    },
    /// The CAs: list, rotate the issuing CA or the root, renew the fleet,
    /// retire an old CA.
    Ca {
        #[command(subcommand)]
        cmd: commands::CaCmd,
    },
    /// People's accounts for the web console (admin).
    Operator {
        #[command(subcommand)]
        cmd: commands::OperatorCmd,
    },
    /// Operator API tokens (admin).
    Token {
        #[command(subcommand)]
        cmd: commands::TokenCmd,
    },
    /// Vulnerability advisories (OSV) against the fleet's releases and devices.
    Advisories {
        #[command(subcommand)]
        cmd: commands::AdvisoryCmd,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        cmd: commands::AuditCmd,
    },
    /// TPM vendor CAs that devices' endorsement key certificates must chain to.
    TpmVendor {
        #[command(subcommand)]
        cmd: commands::TpmVendorCmd,
    },
    /// Firmware releases through the supply-chain gate.
    Release {
        #[command(subcommand)]
        cmd: commands::ReleaseCmd,
    },
    /// Sites, segments, device placement and edge gateways.
    Site {
        #[command(subcommand)]
        cmd: palisade::network::SiteCmd,
    },
    /// Models' network policies (MUD, RFC 8520).
    Policy {
        #[command(subcommand)]
        cmd: palisade::network::PolicyCmd,
    },
    /// Alerts raised by the detectors: list, show, acknowledge, resolve.
    Alerts {
        #[command(subcommand)]
        cmd: palisade::monitoring::AlertsCmd,
    },
    /// Staged rollouts of a release (waves, thresholds, windows).
    Rollout {
        #[command(subcommand)]
        cmd: palisade::rollout::RolloutCmd,
    },
    /// Suppliers and their manufacturer CAs.
    Supplier {
        #[command(subcommand)]
        cmd: commands::SupplierCmd,
    },
    /// Signed batch manifests of devices with birth identities.
    Batch {
        #[command(subcommand)]
        cmd: commands::BatchCmd,
    },
    /// One-time enrolment tokens for devices without a birth identity.
    EnrollmentToken {
        #[command(subcommand)]
        cmd: commands::EnrollmentTokenCmd,
    },
    /// Posture against the practical checklist, ETSI EN 303 645, NIST IR 8259A
    /// and EN 18031-1: the fleet, a model, a site or one device; `report` writes HTML.
    Posture(palisade::posture::PostureArgs),
    /// The offline key ceremony for the TUF image repository.
    Keys {
        #[command(subcommand)]
        cmd: palisade::keys::KeysCmd,
    },
    /// The TUF image repository on the server (root, targets, online keys).
    Tuf {
        #[command(subcommand)]
        cmd: palisade::keys::TufCmd,
    },
    /// The manufacturing-line workflow (offline): manufacturer CA, IDevIDs, manifests.
    Factory {
        #[command(subcommand)]
        cmd: factory::FactoryCmd,
    },
    /// Shell completions on stdout: `palisade completions bash > /etc/bash_completion.d/palisade`.
    Completions {
        /// The shell.
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
    /// The manual page (roff) on stdout, or with --out-dir one page per
    /// command there: `palisade man | man -l -`.
    Man {
        /// Write palisade.1 and palisade-COMMAND.1 here instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
}

/// Writes shell completions for `shell` to stdout.
fn completions(shell: &str) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "palisade",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the man page to stdout, or every command's page into `out_dir`.
fn man(out_dir: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use clap::CommandFactory;
    let cmd = Cli::command();
    match out_dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            output::raw(&String::from_utf8_lossy(&out));
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing the man pages to {}", dir.display()))?;
            output::say(format!("man pages written to {}", dir.display()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::say(format!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(args) => serve::run(&cli.global, args).await,
            Cmd::Demo(args) => demo::run(&cli.global, args).await,
            Cmd::DemoFleet(args) => {
                let _ = tracing_subscriber::fmt().with_ansi(false).try_init();
                demo::run_fleet(&cli.global, args).await
            }
            Cmd::Model { cmd } => commands::model(&cli.global, cmd).await,
            Cmd::Device { cmd } => commands::device(&cli.global, cmd).await,
            Cmd::Cert { cmd } => commands::cert(&cli.global, cmd).await,
            Cmd::Ca { cmd } => commands::ca(&cli.global, cmd).await,
            Cmd::Token { cmd } => commands::token(&cli.global, cmd).await,
            Cmd::Advisories { cmd } => commands::advisories(&cli.global, cmd).await,
            Cmd::Operator { cmd } => commands::operator(&cli.global, cmd).await,
            Cmd::Audit { cmd } => commands::audit(&cli.global, cmd).await,
            Cmd::Supplier { cmd } => commands::supplier(&cli.global, cmd).await,
            Cmd::TpmVendor { cmd } => commands::tpm_vendor(&cli.global, cmd).await,
            Cmd::Release { cmd } => commands::release(&cli.global, cmd).await,
            Cmd::Site { cmd } => palisade::network::site(&cli.global, cmd).await,
            Cmd::Policy { cmd } => palisade::network::policy(&cli.global, cmd).await,
            Cmd::Alerts { cmd } => palisade::monitoring::alerts(&cli.global, cmd).await,
            Cmd::Rollout { cmd } => palisade::rollout::rollout(&cli.global, cmd).await,
            Cmd::Batch { cmd } => commands::batch(&cli.global, cmd).await,
            Cmd::EnrollmentToken { cmd } => commands::enrollment_token(&cli.global, cmd).await,
            Cmd::Factory { cmd } => factory::run(cmd),
            Cmd::Posture(args) => palisade::posture::posture(&cli.global, args).await,
            Cmd::Keys { cmd } => palisade::keys::keys(cmd).await,
            Cmd::Tuf { cmd } => palisade::keys::tuf(&cli.global, cmd).await,
            Cmd::Completions { shell } => completions(&shell),
            Cmd::Man { out_dir } => man(out_dir.as_deref()),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            output::say(format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every subcommand (duplicate flags,
    /// conflicting names), which otherwise only fire when that subcommand runs.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Completions for each shell and the man pages are generated from the
    /// same command tree and name its commands.
    #[test]
    fn completions_and_man_pages_cover_the_commands() {
        use clap::CommandFactory;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut super::Cli::command(), "palisade", &mut out);
            let text = String::from_utf8(out).unwrap_or_default();
            for command in ["serve", "demo", "posture", "operator", "rollout"] {
                assert!(text.contains(command), "{shell} completions lack {command}");
            }
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        clap_mangen::generate_to(super::Cli::command(), dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        let page = std::fs::read_to_string(dir.path().join("palisade.1")).unwrap_or_default();
        assert!(
            page.contains(".TH palisade") && page.contains("posture"),
            "{page}"
        );
        assert!(dir.path().join("palisade-demo.1").exists());
    }
}
