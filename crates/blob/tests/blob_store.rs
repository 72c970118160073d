//! Blob store behaviour: uploads, verification, rollback, restart, cleanup.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use wharf_blob::{AppendOptions, BlobError, BlobStore};
use wharf_oci::{Digest, DigestAlgorithm};

fn options(expected_offset: Option<u64>) -> AppendOptions {
    AppendOptions {
        expected_offset,
        max_size: 1 << 30,
        algorithm: DigestAlgorithm::Sha256,
    }
}

fn body(parts: &[&[u8]]) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin + Send {
    stream::iter(
        parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect::<Vec<_>>(),
    )
}

async fn read_all(
    store: &BlobStore,
    digest: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut body = store.read(digest, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn chunked_upload_publishes_verified_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let upload = store.start_upload("proj/app").await.unwrap();
    assert_eq!(upload.owner(), "proj/app");
    assert_eq!(
        upload
            .append(body(&[b"hello ", b"wor"]), options(Some(0)))
            .await
            .unwrap(),
        9
    );
    assert_eq!(
        upload
            .append(body(&[b"ld"]), options(Some(9)))
            .await
            .unwrap(),
        11
    );
    let digest = Digest::of(DigestAlgorithm::Sha256, b"hello world");
    let finished = upload.finish(&digest).await.unwrap();
    assert_eq!(finished.size(), 11);
    finished.publish().await.unwrap();

    assert_eq!(store.stat(&digest).await.unwrap().unwrap().size, 11);
    assert_eq!(read_all(&store, &digest, None).await, b"hello world");
    assert_eq!(read_all(&store, &digest, Some(6..9)).await, b"wor");
    assert!(matches!(
        store.upload(upload.id()).await,
        Err(BlobError::UploadNotFound(_))
    ));
    assert_eq!(store.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn out_of_order_chunk_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let upload = store.start_upload("a").await.unwrap();
    upload
        .append(body(&[b"abc"]), options(Some(0)))
        .await
        .unwrap();
    let err = upload
        .append(body(&[b"zzz"]), options(Some(5)))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        BlobError::OutOfOrder {
            current: 3,
            requested: 5
        }
    ));
    assert_eq!(upload.size(), 3);
}

#[tokio::test]
async fn failed_body_and_oversize_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let upload = store.start_upload("a").await.unwrap();
    upload.append(body(&[b"abc"]), options(None)).await.unwrap();

    let broken = stream::iter(vec![
        Ok(Bytes::from_static(b"def")),
        Err("connection reset".to_string()),
    ]);
    assert!(matches!(
        upload.append(broken, options(None)).await,
        Err(BlobError::Body(_))
    ));
    assert_eq!(upload.size(), 3);

    let small = AppendOptions {
        max_size: 5,
        ..options(None)
    };
    assert!(matches!(
        upload.append(body(&[b"xyz"]), small).await,
        Err(BlobError::TooLarge { limit: 5 })
    ));
    assert_eq!(upload.size(), 3);

    // The hash state was rolled back too: the digest covers only "abc".
    let digest = Digest::of(DigestAlgorithm::Sha256, b"abc");
    upload
        .finish(&digest)
        .await
        .unwrap()
        .publish()
        .await
        .unwrap();
    assert_eq!(read_all(&store, &digest, None).await, b"abc");
}

#[tokio::test]
async fn digest_mismatch_discards_session_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let upload = store.start_upload("a").await.unwrap();
    upload.append(body(&[b"abc"]), options(None)).await.unwrap();
    let wrong = Digest::of(DigestAlgorithm::Sha256, b"abd");
    assert!(matches!(
        upload.finish(&wrong).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert!(store.stat(&wrong).await.unwrap().is_none());
    assert!(store.list().await.unwrap().is_empty());
    assert!(matches!(
        store.upload(upload.id()).await,
        Err(BlobError::UploadNotFound(_))
    ));
}

#[tokio::test]
async fn session_survives_restart_and_sha512_rehashes() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = BlobStore::open(dir.path()).unwrap();
        let upload = store.start_upload("a").await.unwrap();
        upload
            .append(body(&[b"part one,"]), options(None))
            .await
            .unwrap();
        upload.id().to_string()
    };
    let store = BlobStore::open(dir.path()).unwrap();
    let upload = store.upload(&id).await.unwrap();
    assert_eq!(upload.size(), 9);
    upload
        .append(body(&[b" part two"]), options(Some(9)))
        .await
        .unwrap();
    let digest = Digest::of(DigestAlgorithm::Sha512, b"part one, part two");
    upload
        .finish(&digest)
        .await
        .unwrap()
        .publish()
        .await
        .unwrap();
    assert_eq!(read_all(&store, &digest, None).await, b"part one, part two");
}

#[tokio::test]
async fn upload_ids_cannot_reach_outside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    for id in [
        "../../etc",
        "",
        "a/b",
        "00000000-0000-0000-0000-00000000000G",
    ] {
        assert!(
            matches!(store.upload(id).await, Err(BlobError::UploadNotFound(_))),
            "{id}"
        );
    }
}

#[tokio::test]
async fn stale_sessions_are_removed_but_fresh_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let old = store.start_upload("a").await.unwrap();
    let fresh = store.start_upload("a").await.unwrap();
    let old_data = dir.path().join("uploads").join(old.id()).join("data");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    // 1000 bytes received, then nothing for an hour (a client killed mid-push).
    std::fs::write(&old_data, vec![7u8; 1000]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old_data)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();

    // A dry run counts; nothing goes.
    let ten_minutes = Duration::from_secs(600);
    let dry = store.sweep_uploads(ten_minutes, true).await.unwrap();
    let expected = wharf_blob::UploadSweep {
        removed: 1,
        removed_bytes: 1000,
        left: 1,
        left_bytes: 0,
    };
    assert_eq!(dry, expected);
    assert!(old_data.exists());
    assert_eq!(
        store.sweep_uploads(ten_minutes, false).await.unwrap(),
        expected
    );
    assert!(!old_data.exists());
    assert!(store.upload(fresh.id()).await.is_ok());
    // Idle for a shorter time than asked: reported as left, kept.
    let swept = store.sweep_uploads(ten_minutes, false).await.unwrap();
    assert_eq!((swept.removed, swept.left), (0, 1));
    let swept = store.sweep_uploads(Duration::ZERO, false).await.unwrap();
    assert_eq!((swept.removed, swept.left), (1, 0));
    assert!(store.upload(fresh.id()).await.is_err());
}

#[tokio::test]
async fn put_bytes_verifies_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let digest = Digest::of(DigestAlgorithm::Sha256, b"{}");
    assert!(matches!(
        store.put_bytes(&digest, b"{ }".to_vec()).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    store.put_bytes(&digest, b"{}".to_vec()).await.unwrap();
    store.put_bytes(&digest, b"{}".to_vec()).await.unwrap();
    assert_eq!(store.read_to_vec(&digest, 10).await.unwrap(), b"{}");
    assert!(matches!(
        store.read_to_vec(&digest, 1).await,
        Err(BlobError::TooLarge { .. })
    ));
    assert!(store.delete(&digest).await.unwrap());
    assert!(!store.delete(&digest).await.unwrap());
    assert!(
        std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn large_upload_streams_through_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..(5 << 20) + 123).map(|i| (i * 7 % 251) as u8).collect();
    let chunks: Vec<Result<Bytes, String>> = data
        .chunks(64 * 1024 + 17)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let upload = store.start_upload("a").await.unwrap();
    upload
        .append(stream::iter(chunks), options(Some(0)))
        .await
        .unwrap();
    let digest = Digest::of(DigestAlgorithm::Sha256, &data);
    upload
        .finish(&digest)
        .await
        .unwrap()
        .publish()
        .await
        .unwrap();
    assert_eq!(read_all(&store, &digest, None).await, data);
}
