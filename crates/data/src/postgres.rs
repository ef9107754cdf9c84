//! The PostgreSQL server berth runs for apps' databases (Debian's `postgresql` package):
//! one cluster per platform, its files under `<data>/postgres`, listening on the bridge's
//! gateway address (reachable only from app namespaces the firewall lets through, and from
//! the host) and on a Unix socket for berth's own administration (peer authentication as
//! the `postgres` user). Started detached with `pg_ctl`, so apps keep their database while
//! the control plane restarts.
//!
//! PostgreSQL refuses to run as root, and the `postgres` user cannot traverse berth's data
//! directory (mode 0700, often under `/root`). The cluster's directory is therefore
//! bind-mounted at a path under `/run/berth` that it can reach; the bytes stay in the data
//! directory.
//!
//! Each app gets a role and a database it owns; `CONNECT` is revoked from `PUBLIC`, so one
//! app's role cannot open another app's database.

use nix::unistd::{Gid, Uid, User};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Port the server listens on (on the gateway address only).
pub const PORT: u16 = 5432;

/// Errors of the database server.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres, or no `postgres` user); install it with `apt-get install postgresql`")]
    NotInstalled,
    #[error("PostgreSQL: {0}")]
    Failed(String),
}

/// Where the cluster lives and listens.
#[derive(Debug, Clone)]
pub struct PgLayout {
    /// Its files, in the data directory (`<data>/postgres`).
    pub data_root: PathBuf,
    /// Where those files are bind-mounted for the `postgres` user (`/run/berth/pg-<hash>`).
    pub run_root: PathBuf,
    /// Address to listen on (the bridge's gateway).
    pub listen: Ipv4Addr,
    /// The apps' subnet (allowed by `pg_hba.conf`, password authentication).
    pub subnet: String,
}

/// One app's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDatabase {
    /// Database name.
    pub database: String,
    /// Role that owns it.
    pub role: String,
}

impl AppDatabase {
    /// The database and role of an app (its name with `-` turned into `_`).
    pub fn for_app(app: &str) -> Self {
        let base = format!("app_{}", app.replace('-', "_"));
        Self {
            database: base.clone(),
            role: base,
        }
    }
}

/// The server.
#[derive(Debug, Clone)]
pub struct Postgres {
    layout: PgLayout,
    bin: PathBuf,
    uid: Uid,
    gid: Gid,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Postgres {
    /// Finds the newest installed PostgreSQL and the `postgres` user.
    pub fn locate(layout: PgLayout) -> Result<Self, PgError> {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|_| PgError::NotInstalled)?
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("postgres").exists().then_some((v, bin))
            })
            .collect();
        versions.sort();
        let (_, bin) = versions.pop().ok_or(PgError::NotInstalled)?;
        let user = User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(PgError::NotInstalled)?;
        Ok(Self {
            layout,
            bin,
            uid: user.uid,
            gid: user.gid,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.layout.run_root.join("data")
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.layout.run_root.join("sock")
    }

    /// The address apps connect to.
    pub fn address(&self) -> (Ipv4Addr, u16) {
        (self.layout.listen, PORT)
    }

    /// A command run as the `postgres` user, from `/`, with a clean home.
    fn as_postgres(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.uid(self.uid.as_raw())
            .gid(self.gid.as_raw())
            .current_dir("/")
            .env("HOME", "/var/lib/postgresql")
            .env_remove("PGPASSWORD")
            .env_remove("PGHOST")
            .env_remove("PGDATABASE")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, c: Command, what: &str) -> Result<String, PgError> {
        self.run_with_input(c, what, None)
    }

    /// Runs `c`, its standard input `input` (none: nothing), to its end; its output, or its
    /// standard error as the failure.
    fn run_with_input(
        &self,
        mut c: Command,
        what: &str,
        input: Option<&[u8]>,
    ) -> Result<String, PgError> {
        use std::io::Write;
        use std::process::Stdio;
        let failed = |e: std::io::Error| PgError::Failed(format!("{what}: {e}"));
        let out = match input {
            // Whatever standard streams the caller set (a dump's file) stay as they are.
            None => c.output().map_err(failed)?,
            Some(input) => {
                let mut child = c
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(failed)?;
                if let Some(mut stdin) = child.stdin.take() {
                    // A write that fails means the tool ended early: its own error says why.
                    let _ = stdin.write_all(input);
                }
                child.wait_with_output().map_err(failed)?
            }
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(PgError::Failed(format!(
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    fn chown(&self, path: &Path) -> Result<(), PgError> {
        nix::unistd::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| PgError::Failed(format!("chown {}: {e}", path.display())))
    }

    /// Makes the cluster's directory reachable for the `postgres` user.
    fn ensure_mount(&self) -> Result<(), PgError> {
        use std::os::unix::fs::PermissionsExt;
        let fail = |e: String| PgError::Failed(e);
        for dir in [&self.layout.data_root, &self.layout.run_root] {
            std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
        }
        if let Some(parent) = self.layout.run_root.parent() {
            let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
        }
        self.chown(&self.layout.data_root)?;
        std::fs::set_permissions(
            &self.layout.data_root,
            std::fs::Permissions::from_mode(0o700),
        )
        .map_err(|e| fail(e.to_string()))?;
        if !crate::volumes::is_mounted(&self.layout.run_root) {
            crate::run(
                "mount",
                &[
                    "--bind",
                    &self.layout.data_root.display().to_string(),
                    &self.layout.run_root.display().to_string(),
                ],
            )
            .map_err(fail)?;
        }
        Ok(())
    }

    /// Whether the server answers on its socket.
    pub fn is_running(&self) -> bool {
        let mut c = self.as_postgres("pg_isready");
        c.arg("-q")
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(PORT.to_string());
        c.status().map(|s| s.success()).unwrap_or(false)
    }

    /// Creates the cluster on first use, and starts the server if it is not running.
    pub fn ensure_running(&self) -> Result<(), PgError> {
        self.ensure_mount()?;
        let data = self.data_dir();
        if !data.join("PG_VERSION").exists() {
            let _ = std::fs::remove_dir_all(&data);
            let mut c = self.as_postgres("initdb");
            c.arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
                .args(["--auth-local=peer", "--auth-host=scram-sha-256"]);
            self.run(c, "initdb")?;
            let conf = format!(
                "# Written by berth.\nlisten_addresses = '{}'\nport = {PORT}\nunix_socket_directories = '{}'\npassword_encryption = 'scram-sha-256'\nlogging_collector = off\n",
                self.layout.listen,
                self.socket_dir().display()
            );
            let hba = format!(
                "# Written by berth: berth administers over the socket; apps log in with their password.\nlocal all postgres peer\nhost all all {} scram-sha-256\n",
                self.layout.subnet
            );
            let write = |name: &str, text: &str| -> Result<(), PgError> {
                let p = data.join(name);
                std::fs::write(&p, text)
                    .map_err(|e| PgError::Failed(format!("{}: {e}", p.display())))?;
                self.chown(&p)
            };
            write("postgresql.auto.conf", &conf)?;
            write("pg_hba.conf", &hba)?;
        }
        std::fs::create_dir_all(self.socket_dir()).map_err(|e| PgError::Failed(e.to_string()))?;
        self.chown(&self.socket_dir())?;
        if self.is_running() {
            return Ok(());
        }
        let mut c = self.as_postgres("pg_ctl");
        c.arg("start")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(self.layout.run_root.join("server.log"))
            .args(["-w", "-t", "60", "-s"]);
        // Its own session: the server outlives berth's process group.
        c.process_group(0);
        self.run(c, "starting the server").map_err(|e| {
            let log = std::fs::read_to_string(self.layout.run_root.join("server.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            PgError::Failed(format!(
                "{e}; server log: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ))
        })?;
        Ok(())
    }

    /// Stops the server (fast shutdown) and releases its mount (`berth down`).
    pub fn stop(&self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let mut c = self.as_postgres("pg_ctl");
            c.arg("stop")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "-s"]);
            let _ = c.status();
        }
        if crate::volumes::is_mounted(&self.layout.run_root) {
            let _ = crate::run("umount", &[&self.layout.run_root.display().to_string()]);
        }
        let _ = std::fs::remove_dir(&self.layout.run_root);
    }

    /// Runs SQL as the superuser in `database`; returns psql's unaligned output. The SQL
    /// goes in on standard input, never on psql's command line (which every local user can
    /// read in /proc).
    pub fn sql(&self, database: &str, sql: &str) -> Result<String, PgError> {
        let mut c = self.as_postgres("psql");
        c.arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &PORT.to_string(), "-U", "postgres", "-d", database])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        self.run_with_input(c, "psql", Some(sql.as_bytes()))
    }

    /// Whether a database exists.
    pub fn exists(&self, db: &AppDatabase) -> Result<bool, PgError> {
        let out = self.sql(
            "postgres",
            &format!(
                "SELECT 1 FROM pg_database WHERE datname = {}",
                quote_literal(&db.database)
            ),
        )?;
        Ok(out.trim() == "1")
    }

    /// Creates the app's role (with `password`) and its database; only that role may
    /// connect to it. On failure nothing is left behind.
    pub fn provision(&self, db: &AppDatabase, password: &str) -> Result<(), PgError> {
        let (d, r) = (quote_ident(&db.database), quote_ident(&db.role));
        // The server is handed the password's SCRAM verifier, never the password: no log
        // line of a failed statement can hold it.
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        let steps = [
            format!(
                "CREATE ROLE {r} LOGIN PASSWORD {} CONNECTION LIMIT 64",
                quote_literal(&scram_verifier(password, &salt)?)
            ),
            format!("CREATE DATABASE {d} OWNER {r} ENCODING 'UTF8'"),
            format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC"),
            format!("GRANT CONNECT, TEMPORARY ON DATABASE {d} TO {r}"),
        ];
        for s in steps {
            if let Err(e) = self.sql("postgres", &s) {
                let _ = self.deprovision(db);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops the app's database (closing its connections) and role.
    pub fn deprovision(&self, db: &AppDatabase) -> Result<(), PgError> {
        self.sql(
            "postgres",
            &format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&db.database)
            ),
        )?;
        self.sql(
            "postgres",
            &format!("DROP ROLE IF EXISTS {}", quote_ident(&db.role)),
        )?;
        Ok(())
    }

    /// Writes a dump of the database in pg_dump's custom format to `out`.
    pub fn dump(&self, db: &AppDatabase, out: &Path) -> Result<(), PgError> {
        let file = std::fs::File::create(out)
            .map_err(|e| PgError::Failed(format!("{}: {e}", out.display())))?;
        let mut c = self.as_postgres("pg_dump");
        c.arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &PORT.to_string(),
                "-U",
                "postgres",
                "-Fc",
                "-d",
                &db.database,
            ])
            .stdout(file);
        let result = self.run(c, "pg_dump").map(|_| ());
        if result.is_err() {
            let _ = std::fs::remove_file(out);
        }
        result
    }

    /// Replaces the database's contents with a custom-format dump.
    pub fn restore(&self, db: &AppDatabase, dump: &Path) -> Result<(), PgError> {
        let file = std::fs::File::open(dump)
            .map_err(|e| PgError::Failed(format!("{}: {e}", dump.display())))?;
        let mut c = self.as_postgres("pg_restore");
        c.arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &PORT.to_string(),
                "-U",
                "postgres",
                "-d",
                &db.database,
            ])
            .args(["--clean", "--if-exists", "--no-owner", "--role", &db.role])
            .args(["--single-transaction", "--exit-on-error"])
            .stdin(file);
        self.run(c, "pg_restore").map(|_| ())
    }

    /// An interactive `psql` on the app's database as the superuser (`berth db psql`).
    pub fn psql_command(&self, db: &AppDatabase) -> Command {
        let mut c = self.as_postgres("psql");
        c.arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &PORT.to_string(),
                "-U",
                "postgres",
                "-d",
                &db.database,
            ])
            .stdin(Stdio::inherit());
        c
    }
}

/// The bind-mount path of a data directory's cluster.
pub fn default_run_root(data_dir: &Path) -> PathBuf {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(
        data_dir.as_os_str().as_encoded_bytes(),
    ));
    PathBuf::from("/run/berth").join(format!("pg-{}", &digest[..12]))
}

/// Iterations of SCRAM-SHA-256's key derivation (PostgreSQL's own default).
const SCRAM_ITERATIONS: u32 = 4096;

/// The SCRAM-SHA-256 verifier PostgreSQL keeps for `password` (RFC 5802, RFC 7677), in the
/// form `CREATE ROLE … PASSWORD` takes as already hashed:
/// `SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY`.
pub fn scram_verifier(password: &str, salt: &[u8]) -> Result<String, PgError> {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, SCRAM_ITERATIONS, &mut salted);
    let keyed = |text: &[u8]| {
        <Hmac<Sha256> as Mac>::new_from_slice(&salted)
            .map(|mut mac| {
                mac.update(text);
                mac.finalize().into_bytes()
            })
            .map_err(|e| PgError::Failed(format!("deriving the password's verifier: {e}")))
    };
    let stored = Sha256::digest(keyed(b"Client Key")?);
    let server = keyed(b"Server Key")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored),
        b64.encode(server)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_given_the_scram_verifier_not_the_password() {
        use base64::Engine as _;
        // RFC 7677's salt and password; the verifier as Python's hashlib/hmac derive it.
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let v = scram_verifier("pencil", &salt).unwrap();
        assert_eq!(
            v,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        assert!(!v.contains("pencil"));
    }

    #[test]
    fn names_and_quoting() {
        let d = AppDatabase::for_app("shop-api");
        assert_eq!(d.database, "app_shop_api");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
