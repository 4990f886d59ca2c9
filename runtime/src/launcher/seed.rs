//! The NoCloud seed of `cloudInitNoCloud`: a small vfat image labelled `cidata` with
//! `user-data`, `meta-data` and, when given, `network-config` (the names cloud-init's
//! NoCloud datasource reads). Made in Rust with `fatfs`, no external tools.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// FAT volume labels are 11 bytes, space padded. cloud-init and the test guest look the
/// volume up by the label `cidata`.
const LABEL: [u8; 11] = *b"cidata     ";

/// Write the seed image to `path` (replacing it), atomically: a temporary file in the
/// same dir renamed over the target.
pub fn write_seed(path: &Path, user_data: &[u8], meta_data: &[u8], network_data: Option<&[u8]>) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("seed")));
    let result = make(&tmp, user_data, meta_data, network_data).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn make(path: &Path, user_data: &[u8], meta_data: &[u8], network_data: Option<&[u8]>) -> io::Result<()> {
    let content = (user_data.len() + meta_data.len() + network_data.map_or(0, <[u8]>::len)) as u64;
    // Room for the FAT, the root dir and cluster slack; whole MiB.
    let size = (content + (1 << 20)).div_ceil(1 << 20).max(2) << 20;
    let mut file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    file.set_len(size)?;
    fatfs::format_volume(&mut file, fatfs::FormatVolumeOptions::new().volume_label(LABEL))?;
    {
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new())?;
        let mut files: Vec<(&str, &[u8])> = vec![("user-data", user_data), ("meta-data", meta_data)];
        if let Some(n) = network_data {
            files.push(("network-config", n));
        }
        for (name, bytes) in files {
            let mut f = fs.root_dir().create_file(name)?;
            f.truncate()?;
            f.write_all(bytes)?;
            f.flush()?;
        }
        fs.unmount()?;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn seed_has_the_label_and_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        let user = b"#cloud-config\n#vmform-marker hello\n".repeat(10);
        write_seed(&path, &user, b"instance-id: a.b\n", Some(b"version: 2\n")).unwrap();
        let mut file = fs::File::open(&path).unwrap();
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "cidata");
        let read = |name: &str| {
            let mut out = Vec::new();
            fs.root_dir().open_file(name).unwrap().read_to_end(&mut out).unwrap();
            out
        };
        assert_eq!(read("user-data"), user);
        assert_eq!(read("meta-data"), b"instance-id: a.b\n");
        assert_eq!(read("network-config"), b"version: 2\n");
    }

    #[test]
    fn large_user_data_fits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        let user = vec![b'x'; 5 << 20];
        write_seed(&path, &user, b"", None).unwrap();
        let mut file = fs::File::open(&path).unwrap();
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).unwrap();
        let mut out = Vec::new();
        fs.root_dir().open_file("user-data").unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), user.len());
        assert!(fs.root_dir().open_file("network-config").is_err());
    }
}
