//! `--sse` and `--storage-class` reach every object s3dock writes: blobs, links,
//! tag `current` links (written by compare-and-swap), release records, audit
//! events (conditional creates) and whatever `cleanup` leaves. Checked on moto,
//! which echoes both on HeadObject, with boto3 as an independent client.

mod common;

use common::{fixture, python, TestStore};

#[test]
fn every_written_object_carries_sse_and_storage_class() {
    let Some(mut store) = TestStore::s3("moto") else {
        return;
    };
    store.args.extend(
        ["--sse", "AES256", "--storage-class", "STANDARD_IA"]
            .iter()
            .map(|s| s.to_string()),
    );
    let app = format!("enc/app{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let image = format!("{app}:20231114-2213-abcdef0");
    let archive = fixture("docker25.tar");
    store.ok(
        &["-q", "push", "-i", archive.to_str().unwrap(), &image],
        None,
    );
    store.ok(&["tag", &image, "v1.0.0"], None);
    store.ok(&["promote", &format!("{app}:v1.0.0"), "production"], None);
    // A second promote replaces the environment record (If-Match), and a re-tag
    // replaces a tag's `current` link by compare-and-swap.
    store.ok(&["tag", &image, "v1.0.1"], None);
    store.ok(&["promote", &format!("{app}:v1.0.1"), "production"], None);
    store.ok(&["cleanup", "--older-than", "0s"], None);

    let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
    let script = format!(
        "import boto3\n\
         c=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         for page in c.get_paginator('list_objects_v2').paginate(Bucket='{bucket}',Prefix='{prefix}/'):\n\
         \x20   for o in page.get('Contents',[]):\n\
         \x20       h=c.head_object(Bucket='{bucket}',Key=o['Key'])\n\
         \x20       print(o['Key'], h.get('ServerSideEncryption','-'), h.get('StorageClass','-'))\n"
    );
    let listing = python(&script);
    let lines: Vec<&str> = listing.lines().collect();
    // Blobs, layer/revision links, tag links, image/version/env records, audit events.
    for kind in [
        "/blobs/",
        "/current/link",
        "/_envs/",
        "/_versions/",
        "s3dock/audit/",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(kind)),
            "no {kind} key was written:\n{listing}"
        );
    }
    let missing: Vec<&&str> = lines
        .iter()
        .filter(|l| !l.ends_with(" AES256 STANDARD_IA"))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} keys lack SSE or the storage class:\n{missing:#?}",
        missing.len(),
        lines.len()
    );
}
