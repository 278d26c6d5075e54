//! The U-Boot environment, byte for byte as U-Boot and libubootenv's
//! `fw_printenv`/`fw_setenv` keep it, and the A/B boot control the agent's
//! installer records in it (pure: callers do the I/O).
//!
//! Layout of one copy of `size` bytes: CRC-32 (IEEE, little-endian) of the data
//! area, then — in the redundant layout — one flags byte, then the data area:
//! `name=value\0` entries and a terminating `\0`, zero-padded. Of two redundant
//! copies the valid one with the newer flags counter is current (255 wraps to
//! 0); a write goes to the *other* copy with the counter advanced, so a power
//! cut during a write always leaves the previous environment intact.
//!
//! Boot control uses U-Boot's own variables: `boot_slot` (`a`/`b`),
//! `upgrade_available`, `bootcount`, `bootlimit`, and `alt_slot` for the
//! fallback. [`BootEnv::boot`] applies U-Boot's bootcount logic (as a boot
//! shim does in simulation): during a trial, each boot counts, and past
//! `bootlimit` the other slot is booted and the trial ends.

use std::collections::BTreeMap;

/// Smallest environment accepted.
pub const MIN_SIZE: usize = 64;
/// Largest environment accepted (U-Boot environments are a few KiB to 128 KiB).
pub const MAX_SIZE: usize = 1 << 20;

/// A copy could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The copy is not `size` bytes.
    #[error("environment copy is {got} bytes, expected {want}")]
    Size {
        /// Found.
        got: usize,
        /// Expected.
        want: usize,
    },
    /// Neither copy has a valid CRC.
    #[error("no environment copy has a valid CRC")]
    NoValidCopy,
    /// The data area is malformed.
    #[error("environment data is malformed: {0}")]
    Malformed(String),
    /// The variables do not fit.
    #[error("environment needs {need} bytes but holds {have}")]
    Full {
        /// Needed.
        need: usize,
        /// Available.
        have: usize,
    },
    /// A name or value cannot be stored.
    #[error("variable {0:?}: names are non-empty without '=' or NUL, values without NUL")]
    BadVariable(String),
}

/// How the environment is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per copy.
    pub size: usize,
    /// Two copies with a flags byte (the redundant layout).
    pub redundant: bool,
}

impl Layout {
    fn header(self) -> usize {
        if self.redundant { 5 } else { 4 }
    }

    fn check(self) -> Result<(), EnvError> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(EnvError::Malformed(format!(
                "size {} is outside {MIN_SIZE}..={MAX_SIZE}",
                self.size
            )));
        }
        Ok(())
    }
}

/// Where one copy of the environment lives, as a line of libubootenv's
/// `fw_env.config` says: `DEVICE OFFSET SIZE [SECTOR-SIZE [SECTORS]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLocation {
    /// File or block device.
    pub device: String,
    /// Byte offset of the copy.
    pub offset: u64,
    /// Bytes per copy.
    pub size: usize,
}

fn config_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses an `fw_env.config` (the file `fw_printenv -c` reads): one line per
/// copy, `#` comments. One copy is the single layout, two the redundant one.
pub fn parse_fw_env_config(text: &str) -> Result<(Vec<EnvLocation>, Layout), EnvError> {
    let mut locs = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || EnvError::Malformed(format!("fw_env.config line {line:?}"));
        if fields.len() < 3 {
            return Err(bad());
        }
        let offset = config_number(fields[1]).ok_or_else(bad)?;
        let size = config_number(fields[2])
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(bad)?;
        locs.push(EnvLocation {
            device: fields[0].to_string(),
            offset,
            size,
        });
    }
    let layout = match &locs[..] {
        [a] => Layout {
            size: a.size,
            redundant: false,
        },
        [a, b] if a.size == b.size => Layout {
            size: a.size,
            redundant: true,
        },
        _ => {
            return Err(EnvError::Malformed(
                "fw_env.config must name one copy, or two of the same size".into(),
            ));
        }
    };
    layout.check()?;
    Ok((locs, layout))
}

/// The environment's variables and which copy they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEnv {
    vars: BTreeMap<String, String>,
    layout: Layout,
    /// Index (0 or 1) of the current copy.
    current: usize,
    /// Its flags counter.
    flags: u8,
}

fn parse_data(data: &[u8]) -> Result<BTreeMap<String, String>, EnvError> {
    let mut vars = BTreeMap::new();
    for entry in data.split(|b| *b == 0) {
        if entry.is_empty() {
            break; // "\0\0": end of the variables
        }
        let text = std::str::from_utf8(entry)
            .map_err(|_| EnvError::Malformed("a variable is not UTF-8".into()))?;
        let (k, v) = text
            .split_once('=')
            .ok_or_else(|| EnvError::Malformed(format!("entry {text:?} has no '='")))?;
        if k.is_empty() {
            return Err(EnvError::Malformed("an entry has an empty name".into()));
        }
        vars.insert(k.to_string(), v.to_string());
    }
    Ok(vars)
}

fn copy_ok(copy: &[u8], layout: Layout) -> Option<(u8, BTreeMap<String, String>)> {
    if copy.len() != layout.size {
        return None;
    }
    let stored = u32::from_le_bytes([copy[0], copy[1], copy[2], copy[3]]);
    let data = &copy[layout.header()..];
    if crc32fast::hash(data) != stored {
        return None;
    }
    let flags = if layout.redundant { copy[4] } else { 0 };
    parse_data(data).ok().map(|v| (flags, v))
}

/// Whether flags counter `a` is newer than `b` (255 → 0 wraps, as U-Boot does).
fn newer(a: u8, b: u8) -> bool {
    match (a, b) {
        (0, 255) => true,
        (255, 0) => false,
        _ => a > b,
    }
}

impl BootEnv {
    /// An empty environment (what a device starts from).
    pub fn empty(layout: Layout) -> Result<Self, EnvError> {
        layout.check()?;
        Ok(Self {
            vars: BTreeMap::new(),
            layout,
            current: 1,
            flags: 0,
        })
    }

    /// Reads the environment from its copies (one, or two when redundant).
    pub fn parse(copies: &[&[u8]], layout: Layout) -> Result<Self, EnvError> {
        layout.check()?;
        let want = if layout.redundant { 2 } else { 1 };
        if copies.len() != want {
            return Err(EnvError::Malformed(format!(
                "{} copies given, the layout has {want}",
                copies.len()
            )));
        }
        for c in copies {
            if c.len() != layout.size {
                return Err(EnvError::Size {
                    got: c.len(),
                    want: layout.size,
                });
            }
        }
        let parsed: Vec<_> = copies.iter().map(|c| copy_ok(c, layout)).collect();
        let current = match (&parsed[..], layout.redundant) {
            ([Some(_)], false) => 0,
            ([Some((fa, _)), Some((fb, _))], true) => {
                if newer(*fb, *fa) {
                    1
                } else {
                    0
                }
            }
            ([Some(_), None], true) => 0,
            ([None, Some(_)], true) => 1,
            _ => return Err(EnvError::NoValidCopy),
        };
        let (flags, vars) = parsed[current].clone().ok_or(EnvError::NoValidCopy)?;
        Ok(Self {
            vars,
            layout,
            current,
            flags,
        })
    }

    /// A variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Sets a variable (an empty value deletes it, as `fw_setenv NAME` does).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), EnvError> {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(EnvError::BadVariable(name.to_string()));
        }
        if value.is_empty() {
            self.vars.remove(name);
        } else {
            self.vars.insert(name.to_string(), value.to_string());
        }
        Ok(())
    }

    /// All variables, sorted by name.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// The next write: which copy to overwrite and its bytes. After writing
    /// (and syncing) it, call [`BootEnv::written`].
    pub fn next_write(&self) -> Result<(usize, Vec<u8>), EnvError> {
        let l = self.layout;
        let mut data = Vec::with_capacity(l.size);
        for (k, v) in &self.vars {
            data.extend_from_slice(k.as_bytes());
            data.push(b'=');
            data.extend_from_slice(v.as_bytes());
            data.push(0);
        }
        data.push(0);
        let have = l.size - l.header();
        if data.len() > have {
            return Err(EnvError::Full {
                need: data.len(),
                have,
            });
        }
        data.resize(have, 0);
        let mut out = crc32fast::hash(&data).to_le_bytes().to_vec();
        let target = if l.redundant { 1 - self.current } else { 0 };
        if l.redundant {
            out.push(self.flags.wrapping_add(1));
        }
        out.extend_from_slice(&data);
        Ok((target, out))
    }

    /// Records that the copy from [`BootEnv::next_write`] is now on storage.
    pub fn written(&mut self) {
        if self.layout.redundant {
            self.current = 1 - self.current;
            self.flags = self.flags.wrapping_add(1);
        }
    }

    /// The slot U-Boot boots (`a` unless set).
    pub fn active_slot(&self) -> Slot {
        Slot::parse(self.get("boot_slot").unwrap_or("a")).unwrap_or(Slot::A)
    }

    /// Whether a trial boot of a new slot is under way.
    pub fn in_trial(&self) -> bool {
        self.get("upgrade_available") == Some("1")
    }

    /// Starts a trial of `slot`: U-Boot boots it with bootcount counting, and
    /// falls back to the current slot after `bootlimit` failed boots.
    pub fn begin_trial(&mut self, slot: Slot, bootlimit: u32) -> Result<(), EnvError> {
        let old = self.active_slot();
        self.set("alt_slot", old.as_str())?;
        self.set("boot_slot", slot.as_str())?;
        self.set("bootcount", "0")?;
        self.set("bootlimit", &bootlimit.to_string())?;
        self.set("upgrade_available", "1")
    }

    /// Ends a trial successfully: the new slot stays.
    pub fn commit(&mut self) -> Result<(), EnvError> {
        self.set("upgrade_available", "0")?;
        self.set("bootcount", "0")
    }

    /// One boot, as U-Boot's bootcount logic decides it: returns the slot to
    /// boot and whether this boot fell back from a failed trial.
    pub fn boot(&mut self) -> Result<(Slot, bool), EnvError> {
        if !self.in_trial() {
            return Ok((self.active_slot(), false));
        }
        let count: u32 = self
            .get("bootcount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
            + 1;
        let limit: u32 = self
            .get("bootlimit")
            .and_then(|c| c.parse().ok())
            .unwrap_or(3);
        if count > limit {
            let alt = self
                .get("alt_slot")
                .and_then(Slot::parse)
                .unwrap_or(self.active_slot().other());
            self.set("boot_slot", alt.as_str())?;
            self.set("upgrade_available", "0")?;
            self.set("bootcount", "0")?;
            return Ok((alt, true));
        }
        self.set("bootcount", &count.to_string())?;
        Ok((self.active_slot(), false))
    }
}

/// An A/B slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// Parses `a` or `b`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    /// `a` or `b`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fw_env_config_lines_give_the_copies_and_layout() {
        let (locs, layout) = parse_fw_env_config(
            "# comment\n/dev/mtd1 0x0 0x4000 0x1000\n/var/env1 16384 0x4000 # second\n",
        )
        .unwrap();
        assert_eq!(locs.len(), 2);
        assert_eq!(locs[1].offset, 16384);
        assert_eq!(
            layout,
            Layout {
                size: 0x4000,
                redundant: true
            }
        );
        assert!(parse_fw_env_config("/dev/mtd1 0x0\n").is_err());
        assert!(parse_fw_env_config("").is_err());
        assert!(parse_fw_env_config("a 0 0x4000\nb 0 0x2000\n").is_err());
        assert!(parse_fw_env_config("a 0 0x10\n").is_err());
    }

    use super::*;

    const L: Layout = Layout {
        size: 256,
        redundant: true,
    };

    fn store(env: &mut BootEnv, copies: &mut [Vec<u8>; 2]) {
        let (i, bytes) = env.next_write().unwrap();
        copies[i] = bytes;
        env.written();
    }

    #[test]
    fn writes_alternate_and_the_newest_valid_copy_wins() {
        let mut copies = [vec![0u8; 256], vec![0u8; 256]];
        assert_eq!(
            BootEnv::parse(&[&copies[0], &copies[1]], L),
            Err(EnvError::NoValidCopy)
        );
        let mut env = BootEnv::empty(L).unwrap();
        env.set("boot_slot", "a").unwrap();
        store(&mut env, &mut copies);
        env.set("boot_slot", "b").unwrap();
        store(&mut env, &mut copies);
        let back = BootEnv::parse(&[&copies[0], &copies[1]], L).unwrap();
        assert_eq!(back.get("boot_slot"), Some("b"));
        // A torn write of the next copy: the previous one is still read.
        let mut next = back.clone();
        next.set("boot_slot", "a").unwrap();
        let (i, mut bytes) = next.next_write().unwrap();
        bytes[100] ^= 0xff;
        copies[i] = bytes;
        let after_cut = BootEnv::parse(&[&copies[0], &copies[1]], L).unwrap();
        assert_eq!(after_cut.get("boot_slot"), Some("b"));
    }

    #[test]
    fn flags_wrap_like_u_boot() {
        assert!(newer(0, 255));
        assert!(!newer(255, 0));
        assert!(newer(7, 6));
    }

    #[test]
    fn a_failed_trial_falls_back_after_bootlimit_boots() {
        let mut env = BootEnv::empty(L).unwrap();
        env.begin_trial(Slot::B, 2).unwrap();
        assert_eq!(env.boot().unwrap(), (Slot::B, false));
        assert_eq!(env.boot().unwrap(), (Slot::B, false));
        assert_eq!(env.boot().unwrap(), (Slot::A, true));
        assert!(!env.in_trial());
        assert_eq!(env.boot().unwrap(), (Slot::A, false));
        // A successful trial is committed and stays.
        env.begin_trial(Slot::B, 2).unwrap();
        assert_eq!(env.boot().unwrap(), (Slot::B, false));
        env.commit().unwrap();
        for _ in 0..5 {
            assert_eq!(env.boot().unwrap(), (Slot::B, false));
        }
    }

    #[test]
    fn refuses_what_cannot_be_stored() {
        let mut env = BootEnv::empty(L).unwrap();
        assert!(env.set("a=b", "c").is_err());
        assert!(env.set("", "c").is_err());
        assert!(env.set("k", "v\0").is_err());
        env.set("big", &"x".repeat(300)).unwrap();
        assert!(matches!(env.next_write(), Err(EnvError::Full { .. })));
        assert!(
            BootEnv::parse(
                &[&[0u8; 10]],
                Layout {
                    size: 10,
                    redundant: false
                }
            )
            .is_err()
        );
    }
}
