//! The throwaway PostgreSQL cluster: the extension installed with `cargo pgrx install`, a data
//! directory and port of its own, stopped and removed on drop unless kept.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The system PostgreSQL 15.
const PG15_BIN: &str = "/usr/lib/postgresql/15/bin";
static PG_BIN: OnceLock<PathBuf> = OnceLock::new();

/// Use PostgreSQL `major`: 15 (the system's) or 18 (unpacked by `scripts/setup-pg18.sh` into a
/// directory of its own, which this runs: it installs it when missing). Call once, first.
pub fn use_major(repo: &Path, major: u32) -> Result<(), String> {
    let bin = match major {
        15 => PathBuf::from(PG15_BIN),
        18 => {
            let out = run(
                &mut Command::new(repo.join("scripts").join("setup-pg18.sh")),
                "scripts/setup-pg18.sh (PostgreSQL 18)",
            )?;
            let pg_config = PathBuf::from(out.trim());
            pg_config
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| format!("setup-pg18.sh printed {out:?}, not a pg_config path"))?
        }
        other => return Err(format!("--pg {other}: want 15 or 18")),
    };
    PG_BIN
        .set(bin)
        .map_err(|_| "the PostgreSQL major was chosen twice".to_string())
}

/// The bin directory of the PostgreSQL in use.
pub fn pg_bin() -> &'static Path {
    PG_BIN.get_or_init(|| PathBuf::from(PG15_BIN))
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A command run as the `postgres` user when we are root (initdb refuses root).
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// `cargo pgrx install --release` of `host-pg` into the PostgreSQL in use.
pub fn install_extension(repo: &Path) -> Result<(), String> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(repo.join("host-pg"))
        .args(["pgrx", "install", "--release", "--pg-config"])
        .arg(pg_bin().join("pg_config"));
    if !is_root() {
        cmd.arg("--sudo");
    }
    run(&mut cmd, "cargo pgrx install --release (the extension)").map(|_| ())
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    keep: bool,
    running: bool,
}

impl Cluster {
    /// initdb into a new directory under the temporary directory and start with `conf` lines
    /// appended to postgresql.conf (unix socket only, in the directory itself).
    pub fn start(conf: &[String], keep: bool) -> Result<Cluster, String> {
        let base = std::env::temp_dir();
        let pid = std::process::id();
        let dir = base.join(format!("ruvector_dag-harness.{pid}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if is_root() {
            run(
                Command::new("chown").arg("postgres").arg(&dir),
                "chown postgres",
            )?;
        }
        run(Command::new("chmod").arg("755").arg(&dir), "chmod")?;
        // A port of our own: 54300-54799, from the pid (another harness run picks another).
        let port = 54300 + (pid % 500) as u16;
        let mut cluster = Cluster {
            dir,
            port,
            keep,
            running: false,
        };
        let data = cluster.dir.join("data");
        run(
            as_pg(&pg_bin().join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres"]),
            "initdb",
        )?;
        let mut lines = vec![
            format!("port = {port}"),
            "listen_addresses = ''".to_string(),
            format!("unix_socket_directories = '{}'", cluster.dir.display()),
            "shared_preload_libraries = 'ruvector_dag'".to_string(),
        ];
        lines.extend(conf.iter().cloned());
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)
            .map_err(|e| format!("{}: {e}", conf_path.display()))?;
        text.push('\n');
        text.push_str(&lines.join("\n"));
        text.push('\n');
        std::fs::write(&conf_path, text).map_err(|e| format!("{}: {e}", conf_path.display()))?;
        cluster.pg_ctl(&["-w", "start"])?;
        cluster.running = true;
        Ok(cluster)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        run(
            as_pg(&pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.log_path())
                .args(args),
            &format!("pg_ctl {}", args.join(" ")),
        )
        .map(|_| ())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.display(),
            self.port
        )
    }

    /// A connection to `db` whose session runs with `ruvector.dag_mode = mode`.
    pub fn connect(&self, db: &str, mode: &str) -> Result<postgres::Client, String> {
        let info = format!(
            "{} options='-c ruvector.dag_mode={mode}'",
            self.conninfo(db)
        );
        postgres::Client::connect(&info, postgres::NoTls)
            .map_err(|e| format!("connecting to {db}: {}", crate::run::pg_error(&e)))
    }

    /// Lines of the server log that mean a backend crashed or the server restarted.
    pub fn crashes_in_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("PANIC")
                    || l.contains("was terminated by signal")
                    || l.contains("terminating any other active server processes")
            })
            .map(str::to_string)
            .collect()
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["-m", "fast", "stop"]);
            self.running = false;
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    /// Stop and remove the cluster, unless `--keep` asked to leave it running.
    pub fn stop_unless_kept(&mut self) {
        if !self.keep {
            self.stop();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep && self.running {
            eprintln!(
                "cluster kept: psql -h {} -p {} -U postgres tpch   (stop: pg_ctl -D {}/data stop)",
                self.dir.display(),
                self.port,
                self.dir.display()
            );
            return;
        }
        self.stop();
    }
}
