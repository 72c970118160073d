//! The commit's pre-copy and frozen pass on a real overlayfs mount: what
//! the container changes between the two passes (a file rewritten and
//! appended to while it is copied, a file replaced by rename, deleted or
//! created, one overwritten in place at once, one written through a
//! shared mapping) is in the layer as it was at the freeze, and a file
//! that did not change is not copied twice. The "container" is a process
//! writing through the overlay mount; freezing it is `SIGSTOP`, waited for
//! until the kernel reports it stopped (the agent freezes the cgroup; what
//! matters here is that nothing writes during the frozen pass).
//!
//! Needs root (overlay mounts) and python3 (the writers).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wharf_image::{
    CTIME_MARGIN, ImageStore, ImageStoreOptions, Snapshot, measure_upper, shared_writable_inodes,
};
use wharf_testkit::prereq::require_root_and;

/// An overlay mount (lower, upper, work under `dir`) at `dir/merged`,
/// unmounted on drop.
struct Overlay {
    merged: PathBuf,
    upper: PathBuf,
}

impl Overlay {
    fn mount(dir: &Path) -> Overlay {
        let (lower, upper, work, merged) = (
            dir.join("lower"),
            dir.join("upper"),
            dir.join("work"),
            dir.join("merged"),
        );
        for d in [&lower, &upper, &work, &merged] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(lower.join("doomed.txt"), b"in the image").unwrap();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(status.success(), "mount overlay");
        Overlay { merged, upper }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
    }
}

/// A writer process, killed on drop.
struct Writer(Child);

impl Writer {
    fn python(script: &str) -> Writer {
        let child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Writer(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the next line the writer prints.
    fn expect_line(&mut self, expected: &str) {
        let mut line = String::new();
        BufReader::new(self.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), expected);
    }

    fn say(&mut self, line: &str) {
        let stdin = self.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Stops the process and waits until the kernel says it is stopped:
    /// from here on it writes nothing.
    fn freeze(&self) {
        let pid = self.pid().to_string();
        assert!(
            Command::new("kill")
                .args(["-STOP", &pid])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..1000 {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // `pid (comm) S ...`: the state follows the last `)`.
            let state = stat.rsplit_once(')').unwrap().1.trim_start().chars().next();
            if state == Some('T') {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("writer {pid} did not stop");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn open_store(dir: &Path) -> ImageStore {
    ImageStore::open(dir, ImageStoreOptions::default())
        .await
        .unwrap()
}

fn tar_of(snapshot: &Snapshot) -> Vec<u8> {
    let mut tar = Vec::new();
    snapshot.tar_reader().read_to_end(&mut tar).unwrap();
    tar
}

/// Each regular file's (or whiteout's) content by name.
fn files_in(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.push((name, data));
    }
    files
}

fn content<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    files
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, data)| data.as_slice())
}

/// A file rewritten at its start and appended to without pause while the
/// pre-copy runs is in the layer exactly as it was when the writer was
/// frozen, and the frozen pass copied it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_during_the_precopy_is_committed_as_it_was_at_the_freeze() {
    if !require_root_and("a_file_written_during_the_precopy", &["mount", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let overlay = Overlay::mount(dir.path());
    let store = open_store(&dir.path().join("cache")).await;
    // Some bulk that stays put, so the pre-copy takes a while.
    fs::write(overlay.merged.join("bulk.bin"), vec![3u8; 8 << 20]).unwrap();
    let log = overlay.merged.join("log.txt");
    let mut writer = Writer::python(&format!(
        r#"
import os
f = open({log:?}, "w+b")
n = 0
while True:
    n += 1
    f.seek(0); f.write(b"%012d\n" % n)
    f.seek(0, 2); f.write(b"line %d\n" % n)
    f.flush()
    if n == 1000:
        print("ready", flush=True)
"#,
        log = log.display().to_string()
    ));
    writer.expect_line("ready");
    let exclude: Vec<PathBuf> = Vec::new();
    let precopy = store.precopy_upper(&overlay.upper, &exclude).await.unwrap();
    assert!(precopy.files_copied >= 2, "{precopy:?}");
    writer.freeze();
    let at_freeze = fs::read(&log).unwrap();
    let mapped = shared_writable_inodes(&[writer.pid()]).unwrap();
    let snapshot = store.snapshot_precopied(precopy, mapped).await.unwrap();
    let files = files_in(&tar_of(&snapshot));
    assert!(
        at_freeze.len() > 10_000,
        "the writer wrote: {}",
        at_freeze.len()
    );
    let committed = content(&files, "log.txt").unwrap();
    assert!(
        committed == &at_freeze[..],
        "log.txt: {} bytes committed, {} at the freeze",
        committed.len(),
        at_freeze.len()
    );
    assert!(content(&files, "bulk.bin") == Some(&vec![3u8; 8 << 20][..]));
    assert!(
        snapshot.copied_bytes >= at_freeze.len() as u64,
        "the log was copied again while frozen: {snapshot:?}"
    );
}

/// Between the passes a file is replaced by rename, one deleted (an image
/// file, so a whiteout), one created and one overwritten in place with as
/// many bytes at once (its ctime may not leave the tick the pre-copy
/// recorded): the layer is byte for byte the one a single frozen pass
/// makes, and only the file untouched for longer than the margin is taken
/// from the pre-copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_deletions_creations_and_quick_rewrites_between_the_passes_are_seen() {
    if !require_root_and("renames_deletions_creations", &["mount"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let overlay = Overlay::mount(dir.path());
    let store = open_store(&dir.path().join("cache")).await;
    let m = |p: &str| overlay.merged.join(p);
    fs::write(m("replaced.txt"), b"old replaced").unwrap();
    fs::write(m("settled.bin"), vec![9u8; 1 << 20]).unwrap();
    fs::write(m("rewritten.txt"), b"first version").unwrap();
    fs::remove_file(m("doomed.txt")).unwrap();
    fs::write(m("doomed.txt"), b"recreated, then deleted again").unwrap();
    // Old enough that the pre-copy's copy is trusted.
    std::thread::sleep(CTIME_MARGIN * 3);
    fs::write(m("rewritten.txt"), b"first version").unwrap();

    let precopy = store.precopy_upper(&overlay.upper, &[]).await.unwrap();
    assert_eq!(precopy.files_copied, 4, "{precopy:?}");

    fs::write(m("new.tmp"), b"new replaced, longer").unwrap();
    fs::rename(m("new.tmp"), m("replaced.txt")).unwrap();
    fs::remove_file(m("doomed.txt")).unwrap();
    fs::write(m("created.txt"), b"created").unwrap();
    // Same size, within the tick of the recorded ctime.
    fs::OpenOptions::new()
        .write(true)
        .open(m("rewritten.txt"))
        .unwrap()
        .write_all(b"SECOND VERSIO")
        .unwrap();

    let snapshot = store
        .snapshot_precopied(precopy, Default::default())
        .await
        .unwrap();
    let precopied = tar_of(&snapshot);
    let files = files_in(&precopied);
    assert_eq!(
        content(&files, "replaced.txt"),
        Some(&b"new replaced, longer"[..])
    );
    assert_eq!(content(&files, "created.txt"), Some(&b"created"[..]));
    assert_eq!(
        content(&files, "rewritten.txt"),
        Some(&b"SECOND VERSIO"[..])
    );
    assert_eq!(content(&files, ".wh.doomed.txt"), Some(&b""[..]));
    assert!(content(&files, "settled.bin") == Some(&vec![9u8; 1 << 20][..]));
    assert_eq!(
        snapshot.copied_bytes,
        snapshot.content_bytes - (1 << 20),
        "all but settled.bin copied while frozen: {snapshot:?}"
    );
    let measured = measure_upper(&overlay.upper, &[]).unwrap();
    assert_eq!(snapshot.content_bytes, measured.bytes);

    let one_pass = store.snapshot_upper(&overlay.upper, &[]).await.unwrap();
    assert_eq!(one_pass.copied_bytes, one_pass.content_bytes);
    assert!(
        precopied == tar_of(&one_pass),
        "the same layer as one frozen pass"
    );

    let staging = snapshot.staging_dir().to_path_buf();
    drop((snapshot, one_pass));
    assert!(!staging.exists());
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
}

/// A file written through a shared writable mapping after the pre-copy
/// (to a page already dirty and writable, which does not move ctime: the
/// file's ctime and size are then what the pre-copy recorded) is found in
/// the frozen process's `/proc/PID/maps` and copied while frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_mapped_shared_writable_is_copied_while_frozen() {
    if !require_root_and("a_file_mapped_shared_writable", &["mount", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let overlay = Overlay::mount(dir.path());
    let store = open_store(&dir.path().join("cache")).await;
    let path = overlay.merged.join("mapped.bin");
    let mut writer = Writer::python(&format!(
        r#"
import mmap, sys, time
f = open({path:?}, "w+b")
f.write(b"A" * 8192); f.flush()
m = mmap.mmap(f.fileno(), 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[0:8192] = b"a" * 8192
time.sleep(0.2)
m[0:4096] = b"B" * 4096
print("ready", flush=True)
sys.stdin.readline()
m[0:4096] = b"C" * 4096
print("written", flush=True)
sys.stdin.readline()
"#,
        path = path.display().to_string()
    ));
    writer.expect_line("ready");
    std::thread::sleep(CTIME_MARGIN * 3);
    let precopy = store.precopy_upper(&overlay.upper, &[]).await.unwrap();
    writer.say("go");
    writer.expect_line("written");
    writer.freeze();

    let mapped = shared_writable_inodes(&[writer.pid()]).unwrap();
    let ino = fs::metadata(overlay.upper.join("mapped.bin"))
        .unwrap()
        .ino();
    assert!(mapped.contains(&ino), "inode {ino} not in {mapped:?}");
    let snapshot = store.snapshot_precopied(precopy, mapped).await.unwrap();
    let files = files_in(&tar_of(&snapshot));
    let mut expected = vec![b'C'; 4096];
    expected.extend_from_slice(&[b'a'; 4096]);
    let committed = content(&files, "mapped.bin").unwrap();
    assert!(
        committed == &expected[..],
        "mapped.bin: the first page holds {:?}",
        String::from_utf8_lossy(&committed[..8])
    );
    assert_eq!(snapshot.copied_bytes, 8192);
}

/// A frozen pass that finds what a layer cannot hold (here a `.wh.` name
/// made after the pre-copy) fails naming it, and the pre-copy's staged
/// contents are gone with it.
#[tokio::test]
async fn a_refused_frozen_pass_leaves_nothing_staged() {
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("upper");
    fs::create_dir_all(upper.join("srv")).unwrap();
    fs::write(upper.join("srv/data.bin"), vec![1u8; 100_000]).unwrap();
    let store = open_store(&dir.path().join("cache")).await;
    let precopy = store.precopy_upper(&upper, &[]).await.unwrap();
    assert_eq!((precopy.files_copied, precopy.bytes_copied), (1, 100_000));
    fs::write(upper.join("srv/.wh.sneaky"), b"").unwrap();
    let err = store
        .snapshot_precopied(precopy, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/srv/.wh.sneaky"), "{err}");
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
}
