//! `/proc/PID/maps`: which file (and where in it) a user address comes from.
//! Pure: the caller reads the file.

use std::sync::Arc;

/// One executable mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Device (major, minor) and inode of the mapped file: which file it
    /// was, whatever its path names now.
    pub dev: (u32, u32),
    pub inode: u64,
    /// The path as the process sees it (`/usr/lib/libc.so.6`), or a
    /// pseudo-name such as `[vdso]`.
    pub path: Arc<str>,
}

impl Mapping {
    /// A regular file that can be opened and symbolized (not `[vdso]`, not
    /// a file deleted since it was mapped).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/') && !self.path.ends_with(" (deleted)")
    }

    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }
}

/// Executable mappings kept per process: a process can map thousands of
/// files (each with a path of up to 4 KiB), and maps are cached per pid.
const MAX_MAPPINGS: usize = 2048;

/// The executable mappings of a process, sorted by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Maps(Vec<Mapping>);

impl Maps {
    /// Keeps the executable mappings of a maps file
    /// (`start-end perms offset dev inode path`).
    pub fn parse(text: &str) -> Maps {
        let mut maps: Vec<Mapping> = text
            .lines()
            .filter_map(parse_line)
            .take(MAX_MAPPINGS)
            .collect();
        maps.sort_by_key(|m| m.start);
        Maps(maps)
    }

    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.0.partition_point(|m| m.start <= addr).checked_sub(1)?;
        let m = &self.0[i];
        (addr < m.end).then_some(m)
    }
}

fn parse_line(line: &str) -> Option<Mapping> {
    let mut words = line.splitn(6, ' ');
    let range = words.next()?;
    let perms = words.next()?;
    let offset = words.next()?;
    let dev = words.next()?;
    let inode = words.next()?;
    let path = words.next().map(str::trim_start).unwrap_or("");
    if perms.as_bytes().get(2) != Some(&b'x') || path.is_empty() {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    Some(Mapping {
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path: path.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /tmp/t/close unread
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234 /tmp/t/close unread
7f1c2a428000-7f1c2a5bd000 r-xp 00028000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c2a600000-7f1c2a601000 rw-p 00000000 00:00 0
7ffd1e9f4000-7ffd1e9f6000 r-xp 00000000 00:00 0                          [vdso]
7f1c2a700000-7f1c2a701000 r-xp 00000000 08:01 77 /tmp/gone.so (deleted)
";

    #[test]
    fn addresses_map_to_file_offsets_of_executable_mappings() {
        let maps = Maps::parse(MAPS);
        let exe = maps.find(0x55d0c0a01234).unwrap();
        assert_eq!(&*exe.path, "/tmp/t/close unread", "spaces in paths survive");
        assert_eq!(exe.file_offset(0x55d0c0a01234), 0x1234);
        let libc = maps.find(0x7f1c2a4f89f0).unwrap();
        assert_eq!(libc.file_offset(0x7f1c2a4f89f0), 0xf89f0);
        assert_eq!((libc.dev, libc.inode), ((8, 1), 99));
        assert!(libc.is_file());
        // Not executable, past the end, or anonymous: no mapping.
        assert_eq!(maps.find(0x55d0c0a00010), None);
        assert_eq!(maps.find(0x55d0c0a02000), None);
        assert_eq!(maps.find(0x7f1c2a600010), None);
        assert_eq!(maps.find(1), None);
        let vdso = maps.find(0x7ffd1e9f4100).unwrap();
        assert_eq!(&*vdso.path, "[vdso]");
        assert!(!vdso.is_file());
        assert!(!maps.find(0x7f1c2a700010).unwrap().is_file());
    }
}
