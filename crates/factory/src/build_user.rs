//! Each app builds as its own host identity: a uid and gid of its own, and for buildah a
//! range of subordinate ids of its own, so that one app's build steps — even one that got
//! out of its chroot — cannot read another app's build cache, storage or source.
//!
//! The control plane gives each app a slot, never reused; slot `n` owns the ids
//! `BASE + n·SPAN … BASE + n·SPAN + SPAN − 1`: the first is the build uid (and gid), the
//! rest its subordinate ids. The range sits above the ones systemd-nspawn and the
//! distribution hand out (`0x7000_0000` up) and below 2³¹, where every tool is at ease.

use crate::builder::BuildError;
use std::process::Command;
use std::sync::Mutex;

/// First id of slot 0 (which is never handed out).
const BASE: u32 = 0x7000_0000;
/// Ids per slot: the build uid and its subordinate ids.
const SPAN: u32 = 65_536;
/// Slots 1 … MAX_SLOT exist (the last ends just below 2³¹).
pub const MAX_SLOT: u32 = (0x8000_0000 - BASE) / SPAN - 1;

/// One app's build identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildIdentity {
    slot: u32,
}

/// Account changes (useradd, usermod) take a lock of their own on /etc/passwd and fail
/// at once when another holds it: one at a time within berth.
static ACCOUNTS: Mutex<()> = Mutex::new(());

impl BuildIdentity {
    /// The identity of slot `slot` (1 … [`MAX_SLOT`]).
    pub fn new(slot: u32) -> Result<Self, BuildError> {
        if slot == 0 || slot > MAX_SLOT {
            return Err(BuildError::BuildUser(format!(
                "build identity slot {slot} is out of range 1–{MAX_SLOT}: this machine has given every build identity it has"
            )));
        }
        Ok(Self { slot })
    }

    /// The uid the app's builds run as.
    pub fn uid(&self) -> u32 {
        BASE + self.slot * SPAN
    }

    /// The gid they run with (the same number).
    pub fn gid(&self) -> u32 {
        self.uid()
    }

    /// The app's subordinate ids: (first, count).
    pub fn subids(&self) -> (u32, u32) {
        (self.uid() + 1, SPAN - 1)
    }

    /// The host account's name (buildah needs a name for its uid and subordinate ids).
    pub fn account(&self) -> String {
        format!("berth-b{}", self.slot)
    }

    /// A line for the build log.
    pub fn describe(&self) -> String {
        let (first, count) = self.subids();
        format!(
            "Building as uid {} (this app's own; subordinate ids {first}–{})",
            self.uid(),
            first + count - 1
        )
    }

    /// Claims the slot on this machine by making its account and group, which no other
    /// platform on the machine (another data directory) can then make: true when this call
    /// made them, false when they (or ids of the slot) exist already.
    pub fn claim(&self, owner: &std::path::Path) -> Result<bool, BuildError> {
        let _one = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let account = self.account();
        let id = self.uid().to_string();
        let named = |text: &str| {
            text.lines()
                .any(|l| l.split(':').next() == Some(account.as_str()))
        };
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(read("/etc/passwd"))?;
        let group = std::fs::read_to_string("/etc/group").map_err(read("/etc/group"))?;
        if owner_of(&passwd, &id).is_some()
            || owner_of(&group, &id).is_some()
            || named(&passwd)
            || named(&group)
        {
            return Ok(false);
        }
        // Another process may make the same ids meanwhile: a refusal is a lost race when
        // the ids exist afterwards, else a failure.
        let lost = |file: &'static str| -> Result<bool, BuildError> {
            let text = std::fs::read_to_string(file).map_err(read(file))?;
            Ok(owner_of(&text, &id).is_some() || named(&text))
        };
        if let Err(e) = admin(Command::new("groupadd").args(["--gid", &id, &account])) {
            return if lost("/etc/group")? {
                Ok(false)
            } else {
                Err(e)
            };
        }
        // The comment names the platform's data directory: an account whose directory is
        // gone is reclaimed (see [`reclaim_stale`]).
        // (Only a plain absolute path: one the account file cannot hold is not recorded,
        // and such an account is never reclaimed.)
        let comment = owner
            .to_str()
            .filter(|p| owner.is_absolute() && !p.contains([':', ',', '\n']))
            .map(|p| format!("{OWNER_MARK}{p}"))
            .unwrap_or_default();
        if let Err(e) = admin(Command::new("useradd").args([
            "--system",
            "--uid",
            &id,
            "--gid",
            &id,
            "--comment",
            &comment,
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            &account,
        ])) {
            let _ = admin(Command::new("groupdel").arg(&account));
            return if lost("/etc/passwd")? {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(true)
    }

    /// Makes the host account, its group and its subordinate ids, once. An id or range
    /// some other account already holds is refused by name, never shared.
    pub fn ensure(&self) -> Result<(), BuildError> {
        let _one = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let account = self.account();
        let uid = self.uid().to_string();
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(read("/etc/passwd"))?;
        match owner_of(&passwd, &uid) {
            Some(name) if name == account => {}
            Some(name) => {
                return Err(BuildError::BuildUser(format!(
                    "uid {uid}, which berth builds {account} with, belongs to the account {name}"
                )))
            }
            None => {
                let group = std::fs::read_to_string("/etc/group").map_err(read("/etc/group"))?;
                match owner_of(&group, &uid) {
                    Some(name) if name == account => {}
                    Some(name) => {
                        return Err(BuildError::BuildUser(format!(
                        "gid {uid}, which berth builds {account} with, belongs to the group {name}"
                    )))
                    }
                    None => admin(Command::new("groupadd").args(["--gid", &uid, &account]))?,
                }
                admin(Command::new("useradd").args([
                    "--system",
                    "--uid",
                    &uid,
                    "--gid",
                    &uid,
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    &account,
                ]))?;
            }
        }
        let (first, count) = self.subids();
        for (file, flag) in [
            ("/etc/subuid", "--add-subuids"),
            ("/etc/subgid", "--add-subgids"),
        ] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            match subid_state(&text, &account, &uid, first, count) {
                SubIds::Present => {}
                SubIds::Absent => admin(Command::new("usermod").args([
                    flag,
                    &format!("{first}-{}", first + count - 1),
                    &account,
                ]))?,
                SubIds::Taken(line) => {
                    return Err(BuildError::BuildUser(format!(
                        "{file} gives ids {first}–{} (those of {account}) to another: `{line}`",
                        first + count - 1
                    )))
                }
            }
        }
        Ok(())
    }
}

impl BuildIdentity {
    /// Removes the host account, its group and subordinate ids (the app is gone; its slot
    /// is never handed out again). Nothing to do when they are not there.
    pub fn forget(&self) -> Result<(), BuildError> {
        let _one = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let account = self.account();
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(read("/etc/passwd"))?;
        if owner_of(&passwd, &self.uid().to_string()).as_deref() == Some(account.as_str()) {
            admin(Command::new("userdel").arg(&account))?;
        }
        let group = std::fs::read_to_string("/etc/group").map_err(read("/etc/group"))?;
        if owner_of(&group, &self.gid().to_string()).as_deref() == Some(account.as_str()) {
            admin(Command::new("groupdel").arg(&account))?;
        }
        Ok(())
    }
}

/// What the comment of a build account starts with, before its platform's data directory.
const OWNER_MARK: &str = "berth build for ";

/// Removes the build accounts of platforms whose data directory is gone (deleted without
/// destroying its apps): their slots are free again. How many were removed.
pub fn reclaim_stale() -> Result<usize, BuildError> {
    let _one = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(read("/etc/passwd"))?;
    let mut removed = 0;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        let (Some(name), Some(uid), Some(comment)) = (f.first(), f.get(2), f.get(4)) else {
            continue;
        };
        let ours = name.starts_with("berth-b")
            && uid
                .parse::<u32>()
                .is_ok_and(|u| (BASE..0x8000_0000).contains(&u));
        let Some(dir) = comment.strip_prefix(OWNER_MARK) else {
            continue;
        };
        // (An account a process still runs as stays, and its slot with it.)
        if ours
            && dir.starts_with('/')
            && !std::path::Path::new(dir).exists()
            && admin(Command::new("userdel").arg(name)).is_ok()
        {
            let _ = admin(Command::new("groupdel").arg(name));
            removed += 1;
        }
    }
    Ok(removed)
}

/// The slots whose host ids are still in use on this machine: an account or group with an
/// id of the slot's, or subordinate ids given out in its range (an app whose account could
/// not be removed). Such a slot is not handed out again.
pub fn slots_in_use_on_host() -> Result<std::collections::BTreeSet<u32>, BuildError> {
    let mut ids = Vec::new();
    for file in ["/etc/passwd", "/etc/group"] {
        ids.push(
            std::fs::read_to_string(file)
                .map_err(|e| BuildError::BuildUser(format!("reading {file}: {e}")))?,
        );
    }
    let ranges: Vec<String> = ["/etc/subuid", "/etc/subgid"]
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    Ok(slots_used(&ids, &ranges))
}

/// The slots that passwd/group-style texts (`ids`) and subuid/subgid-style texts
/// (`ranges`) give ids of.
fn slots_used(ids: &[String], ranges: &[String]) -> std::collections::BTreeSet<u32> {
    const END: u64 = 0x8000_0000;
    let slot_of = |id: u64| -> u32 { ((id - u64::from(BASE)) / u64::from(SPAN)) as u32 };
    let mut used = std::collections::BTreeSet::new();
    for text in ids {
        used.extend(
            text.lines()
                .filter_map(|l| l.split(':').nth(2)?.parse::<u64>().ok())
                .filter(|id| (u64::from(BASE)..END).contains(id))
                .map(slot_of),
        );
    }
    for text in ranges {
        for line in text.lines() {
            let mut f = line.split(':').skip(1);
            let (Some(Ok(start)), Some(Ok(n))) = (
                f.next().map(str::parse::<u64>),
                f.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            // Every slot the range touches.
            let lo = start.max(u64::from(BASE));
            let hi = start.saturating_add(n.max(1) - 1).min(END - 1);
            if lo <= hi {
                used.extend(slot_of(lo)..=slot_of(hi));
            }
        }
    }
    used
}

fn read(path: &'static str) -> impl FnOnce(std::io::Error) -> BuildError {
    move |e| BuildError::BuildUser(format!("reading {path}: {e}"))
}

/// The name of the entry of a passwd- or group-style file with id `id`.
fn owner_of(text: &str, id: &str) -> Option<String> {
    text.lines()
        .find(|l| l.split(':').nth(2) == Some(id))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
}

#[derive(Debug, PartialEq, Eq)]
enum SubIds {
    Present,
    Absent,
    Taken(String),
}

/// Whether a subuid/subgid file gives `account` exactly its range, nobody any of it, or
/// someone else a part of it.
fn subid_state(text: &str, account: &str, uid: &str, first: u32, count: u32) -> SubIds {
    let (lo, hi) = (u64::from(first), u64::from(first) + u64::from(count));
    let mut present = false;
    for line in text.lines() {
        let mut f = line.split(':');
        let (Some(owner), Some(start), Some(n)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(start), Ok(n)) = (start.parse::<u64>(), n.parse::<u64>()) else {
            continue;
        };
        let ours = owner == account || owner == uid;
        if ours && start == lo && start + n == hi {
            present = true;
        } else if start < hi && lo < start + n {
            return SubIds::Taken(line.to_string());
        }
    }
    if present {
        SubIds::Present
    } else {
        SubIds::Absent
    }
}

fn admin(cmd: &mut Command) -> Result<(), BuildError> {
    let out = cmd
        .output()
        .map_err(|e| BuildError::BuildUser(format!("running {:?}: {e}", cmd.get_program())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BuildError::BuildUser(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_own_disjoint_ranges_below_two_to_the_31() {
        assert!(BuildIdentity::new(0).is_err());
        assert!(BuildIdentity::new(MAX_SLOT + 1).is_err());
        let a = BuildIdentity::new(1).unwrap();
        let b = BuildIdentity::new(2).unwrap();
        let last = BuildIdentity::new(MAX_SLOT).unwrap();
        let (a_first, a_count) = a.subids();
        assert_eq!(
            a_first + a_count,
            b.uid(),
            "a's range ends where b's begins"
        );
        assert!(a.uid() > 0x6fff_ffff);
        let (l_first, l_count) = last.subids();
        assert!(u64::from(l_first) + u64::from(l_count) <= 0x8000_0000);
        assert_ne!(a.account(), b.account());
        assert!(a.describe().contains(&a.uid().to_string()));
    }

    #[test]
    fn slots_whose_ids_a_machine_still_uses_are_found() {
        let a = BuildIdentity::new(7).unwrap();
        let (first, count) = a.subids();
        let passwd = format!(
            "root:x:0:0::/root:/bin/sh\nberth-b2:x:{}:{}::/:/bin/sh\n",
            BuildIdentity::new(2).unwrap().uid(),
            BuildIdentity::new(2).unwrap().gid()
        );
        let subuid = format!("root:100000:65536\nberth-b7:{first}:{count}\n");
        // A foreign range reaching into slots 9 and 10 from below the base.
        let foreign = format!("someone:{}:{}\n", BASE - 10, 10 + 10 * SPAN + 1);
        let used = slots_used(&[passwd], &[subuid, foreign]);
        assert_eq!(
            used.into_iter().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        );
        assert!(slots_used(&["root:x:0:0::/:/bin/sh".into()], &[String::new()]).is_empty());
    }

    #[test]
    fn subordinate_ids_are_found_added_or_refused_when_another_holds_them() {
        let a = BuildIdentity::new(3).unwrap();
        let (first, count) = a.subids();
        let uid = a.uid().to_string();
        let ours = format!("{}:{first}:{count}\n", a.account());
        assert_eq!(
            subid_state(&ours, &a.account(), &uid, first, count),
            SubIds::Present
        );
        assert_eq!(
            subid_state("root:100000:65536\n", &a.account(), &uid, first, count),
            SubIds::Absent
        );
        let clash = format!("someone:{}:10\n", first + 5);
        assert_eq!(
            subid_state(&clash, &a.account(), &uid, first, count),
            SubIds::Taken(clash.trim().to_string())
        );
        // Ours, but a different range than the slot's: refused rather than widened.
        let odd = format!("{}:{first}:10\n", a.account());
        assert!(matches!(
            subid_state(&odd, &a.account(), &uid, first, count),
            SubIds::Taken(_)
        ));
        assert_eq!(owner_of("x:x:5:5::/:/bin/sh\n", "5").as_deref(), Some("x"));
        assert_eq!(owner_of("x:x:5:5::/:/bin/sh\n", "6"), None);
    }
}
