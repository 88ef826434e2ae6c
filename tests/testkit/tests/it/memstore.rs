//! The in-memory S3 backend behind s3s's real protocol layer, over HTTP with
//! SigV4: every legal key round-trips exactly (PutObject → ListObjectsV2,
//! plain and `encoding-type=url`, paged → GetObject), ranges and
//! preconditions, Content-Type and metadata, multipart rules, and errors.

use std::collections::BTreeMap;

use s3s::crypto::{Checksum as _, Md5};
use spaces_backup_testkit::server::{MemStore, S3Server};

use spaces_backup_testkit::client::{object_path, Client};
use spaces_backup_testkit::sigv4::hex;

const AK: &str = "AKIDMEMTEST";
const SK: &str = "mem/secret+key";

fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::checksum(data))
}

// ---------------------------------------------------------------------------
// Just enough XML.

/// The contents of every `<tag>...</tag>` (not nested in itself), raw.
fn blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// Every `<tag>` value, XML-unescaped.
fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    blocks(xml, tag).into_iter().map(xml_unescape).collect()
}

fn tag_value(xml: &str, tag: &str) -> Option<String> {
    tag_values(xml, tag).into_iter().next()
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').expect("entity end") + i;
        let entity = &rest[i + 1..end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ if entity.starts_with("#x") => {
                char::from_u32(u32::from_str_radix(&entity[2..], 16).unwrap()).unwrap()
            }
            _ if entity.starts_with('#') => char::from_u32(entity[1..].parse().unwrap()).unwrap(),
            _ => panic!("unknown entity &{entity};"),
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Decodes `encoding-type=url` values as S3 clients do: form decoding
/// (`+` is a space, `%XX` a byte).
/// A listed key or prefix with `encoding-type=url`, decoded as form data.
fn form_decode(s: &str) -> String {
    form_urlencoded::parse(format!("k={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// One ListObjectsV2 page.
struct Listing {
    keys: Vec<String>,
    etags: Vec<String>,
    sizes: Vec<u64>,
    prefixes: Vec<String>,
    truncated: bool,
    next_token: Option<String>,
    key_count: usize,
}

fn parse_listing(xml: &str, url: bool) -> Listing {
    let decode = |s: String| if url { form_decode(&s) } else { s };
    let contents = blocks(xml, "Contents");
    for c in &contents {
        assert!(
            blocks(c, "LastModified").len() == 1
                && tag_value(c, "StorageClass").as_deref() == Some("STANDARD"),
            "Contents without LastModified or StorageClass: {c}"
        );
    }
    Listing {
        keys: contents
            .iter()
            .map(|c| decode(tag_value(c, "Key").expect("Key")))
            .collect(),
        etags: contents
            .iter()
            .map(|c| tag_value(c, "ETag").expect("ETag"))
            .collect(),
        sizes: contents
            .iter()
            .map(|c| tag_value(c, "Size").expect("Size").parse().unwrap())
            .collect(),
        prefixes: blocks(xml, "CommonPrefixes")
            .into_iter()
            .map(|c| decode(tag_value(c, "Prefix").expect("Prefix")))
            .collect(),
        truncated: tag_value(xml, "IsTruncated").as_deref() == Some("true"),
        next_token: tag_value(xml, "NextContinuationToken"),
        key_count: tag_value(xml, "KeyCount")
            .expect("KeyCount")
            .parse()
            .unwrap(),
    }
}

/// Lists `bucket` to the end, `max_keys` at a time; all keys and common
/// prefixes (decoded if `url`) in the order they came.
async fn list_all(
    c: &mut Client,
    bucket: &str,
    query: &[(&str, &str)],
    max_keys: usize,
    url: bool,
) -> (Vec<String>, Vec<String>) {
    let max = max_keys.to_string();
    let (mut keys, mut prefixes) = (Vec::new(), Vec::new());
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("max-keys", &max));
        if url {
            q.push(("encoding-type", "url"));
        }
        if let Some(t) = &token {
            q.push(("continuation-token", t));
        }
        let r = c.list(bucket, &q).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = parse_listing(&r.text(), url);
        assert_eq!(page.key_count, page.keys.len() + page.prefixes.len());
        assert!(page.key_count <= max_keys, "{}", r.text());
        if url {
            assert_eq!(tag_value(&r.text(), "EncodingType").as_deref(), Some("url"));
        }
        keys.extend(page.keys);
        prefixes.extend(page.prefixes);
        if !page.truncated {
            assert!(page.next_token.is_none());
            return (keys, prefixes);
        }
        assert_eq!(page.key_count, max_keys, "a truncated page is full");
        token = Some(page.next_token.expect("NextContinuationToken"));
    }
    panic!("listing never ended");
}

fn memory_server() -> S3Server {
    let s3 = S3Server::start_in_memory(AK, SK).unwrap();
    s3.create_bucket("src").unwrap();
    s3
}

/// Every kind of key S3 allows (any UTF-8, 1 to 1,024 bytes), including
/// those no file system can hold.
fn legal_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "plain.txt",
        "with space/and more .txt",
        " leading and trailing space ",
        "plus+sign",
        "+",
        "100%",
        "%",
        "%2F",
        "%25",
        "percent%20literal",
        "hash#tag",
        "question?mark",
        "a=b&c=d?e#f",
        "semi;colon,comma:colon@at!bang$dollar'quote(paren)*star",
        "tilde~",
        "*",
        "~",
        "quote\"double",
        "<angle>&amp;",
        "caf\u{e9}.txt",
        "cafe\u{301}.txt",
        "emoji/\u{1F600}\u{1F389}/\u{1F469}\u{200D}\u{1F469}\u{200D}\u{1F467}.bin",
        "back\\slash\\path.txt",
        "C:\\windows\\path",
        "word:prefix",
        "s3:colon/key",
        "http://host/x",
        "a//b",
        "//double-leading",
        "/leading-slash",
        "/",
        "//",
        "../",
        "..",
        ".",
        "./dot",
        "a/./b",
        "a/../b",
        "../../escape",
        "folder/",
        "folder/nested/",
        "folder/nested/file",
        "tab\there",
        "new\nline",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    keys.push(format!("long/{}/segment", "s".repeat(300)));
    keys.push("\u{e9}".repeat(512)); // 1,024 bytes
    keys.push("k".repeat(1024));
    keys
}

/// Zero-byte folder markers for keys ending in `/`, else some bytes.
fn body_for(key: &str) -> Vec<u8> {
    if key.ends_with('/') {
        Vec::new()
    } else {
        format!("body of {key:?}").into_bytes()
    }
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_legal_key_round_trips_exactly() {
    let s3 = memory_server();
    let mut c = Client::connect(&s3, AK, SK).await;
    let keys = legal_keys();
    for key in &keys {
        let body = body_for(key);
        let r = c.put("src", key, &[], &body).await;
        assert_eq!(r.status, 200, "PUT {key:?}: {}", r.text());
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{}\"", md5_hex(&body)).as_str()),
            "{key:?}"
        );
    }
    let mut sorted = keys.clone();
    sorted.sort(); // byte order, as S3
    sorted.dedup();
    assert_eq!(sorted.len(), keys.len(), "keys are distinct");
    // The store holds the keys exactly as sent, NFC and NFD apart.
    assert_eq!(s3.object_keys("src").unwrap(), sorted);

    // One page, plain and url-encoded.
    for url in [false, true] {
        let mut q = vec![];
        if url {
            q.push(("encoding-type", "url"));
        }
        let r = c.list("src", &q).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = parse_listing(&r.text(), url);
        assert_eq!(page.keys, sorted, "url={url}");
        assert!(!page.truncated && page.prefixes.is_empty());
        assert_eq!(tag_value(&r.text(), "MaxKeys").as_deref(), Some("1000"));
        for (i, key) in sorted.iter().enumerate() {
            let body = body_for(key);
            assert_eq!(page.etags[i], format!("\"{}\"", md5_hex(&body)), "{key:?}");
            assert_eq!(page.sizes[i], body.len() as u64, "{key:?}");
        }
    }
    // With encoding-type=url, nothing outside the safe set is left raw.
    let r = c.list("src", &[("encoding-type", "url")]).await;
    for raw in blocks(&r.text(), "Key") {
        assert!(
            raw.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./*%+".contains(&b)),
            "{raw:?}"
        );
    }
    assert!(r.text().contains("<Key>plus%2Bsign</Key>"), "{}", r.text());
    assert!(r.text().contains("<Key>with+space/and+more+.txt</Key>"));

    // Two keys a page, following continuation tokens.
    for url in [false, true] {
        let (listed, prefixes) = list_all(&mut c, "src", &[], 2, url).await;
        assert_eq!(listed, sorted, "url={url}");
        assert!(prefixes.is_empty());
    }

    // Each object's bytes come back under its exact key.
    for key in &sorted {
        let r = c.get("src", key, &[]).await;
        assert_eq!(r.status, 200, "GET {key:?}: {}", r.text());
        assert_eq!(r.body, body_for(key), "GET {key:?}");
        let r = c
            .send("HEAD", &object_path("src", key), &[], &[], b"")
            .await;
        assert_eq!(r.status, 200, "HEAD {key:?}");
        assert_eq!(
            r.header("content-length"),
            Some(body_for(key).len().to_string().as_str())
        );
        assert_eq!(s3.read_object("src", key).unwrap(), body_for(key));
    }

    // Over S3's limit: KeyTooLongError, from s3s's path parsing.
    let r = c.put("src", &"k".repeat(1025), &[], b"x").await;
    assert_eq!((r.status, r.code().as_str()), (400, "KeyTooLongError"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_prefix_delimiter_start_after() {
    let s3 = memory_server();
    let mut c = Client::connect(&s3, AK, SK).await;
    let keys = [
        "a", "a/", "a/b", "a/c/d", "a/c/e", "b", "b/x", "/x", "//y", "../z", "c d/e",
    ];
    for key in keys {
        s3.put_object("src", key, key.as_bytes()).unwrap();
    }

    for url in [false, true] {
        let (k, p) = list_all(&mut c, "src", &[("delimiter", "/")], 1000, url).await;
        assert_eq!(k, ["a", "b"]);
        assert_eq!(p, ["../", "/", "a/", "b/", "c d/"]);

        let (k, p) = list_all(
            &mut c,
            "src",
            &[("delimiter", "/"), ("prefix", "a/")],
            1000,
            url,
        )
        .await;
        assert_eq!(k, ["a/", "a/b"]);
        assert_eq!(p, ["a/c/"]);

        let (k, p) = list_all(
            &mut c,
            "src",
            &[("delimiter", "/"), ("prefix", "/")],
            1000,
            url,
        )
        .await;
        assert_eq!((k, p), (vec!["/x".to_string()], vec!["//".to_string()]));

        // Pages of one entry: common prefixes count, and are not repeated.
        let (k, p) = list_all(&mut c, "src", &[("delimiter", "/")], 1, url).await;
        assert_eq!(k, ["a", "b"]);
        assert_eq!(p, ["../", "/", "a/", "b/", "c d/"]);

        let (k, _) = list_all(&mut c, "src", &[("start-after", "a/b")], 1000, url).await;
        assert_eq!(k, ["a/c/d", "a/c/e", "b", "b/x", "c d/e"]);
        let (k, _) = list_all(
            &mut c,
            "src",
            &[("prefix", "a/"), ("start-after", "a/b")],
            2,
            url,
        )
        .await;
        assert_eq!(k, ["a/c/d", "a/c/e"]);
    }

    // Prefix, delimiter and start-after are echoed, url-encoded if asked.
    let r = c
        .list(
            "src",
            &[
                ("prefix", "c d/"),
                ("delimiter", "/"),
                ("start-after", "c d/+"),
                ("encoding-type", "url"),
            ],
        )
        .await;
    let xml = r.text();
    assert_eq!(tag_value(&xml, "Prefix").as_deref(), Some("c+d/"), "{xml}");
    assert_eq!(
        tag_value(&xml, "StartAfter").as_deref(),
        Some("c+d/%2B"),
        "{xml}"
    );
    assert_eq!(tag_value(&xml, "Delimiter").as_deref(), Some("/"), "{xml}");
    assert_eq!(parse_listing(&xml, true).keys, ["c d/e"]);

    // max-keys above 1000 is capped; a made-up token is refused.
    let r = c.list("src", &[("max-keys", "5000")]).await;
    assert_eq!(tag_value(&r.text(), "MaxKeys").as_deref(), Some("1000"));
    let r = c.list("src", &[("continuation-token", "!!")]).await;
    assert_eq!((r.status, r.code().as_str()), (400, "InvalidArgument"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_preconditions() {
    let s3 = memory_server();
    let mut c = Client::connect(&s3, AK, SK).await;
    let key = "dir//r a/../n";
    let r = c.put("src", key, &[], b"0123456789").await;
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", md5_hex(b"0123456789")));

    for (range, body, content_range) in [
        ("bytes=2-5", &b"2345"[..], "bytes 2-5/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=8-100", b"89", "bytes 8-9/10"),
        ("bytes=0-0", b"0", "bytes 0-0/10"),
    ] {
        let r = c.get("src", key, &[("range", range)]).await;
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert_eq!(r.body, body, "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let r = c.get("src", key, &[("range", "bytes=10-")]).await;
    assert_eq!((r.status, r.code().as_str()), (416, "InvalidRange"));
    s3.put_object("src", "empty", b"").unwrap();
    let r = c.get("src", "empty", &[("range", "bytes=0-")]).await;
    assert_eq!((r.status, r.code().as_str()), (416, "InvalidRange"));

    // If-Match: the whole object, or 412 when the ETag differs.
    let r = c.get("src", key, &[("if-match", &etag)]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
    let r = c
        .get("src", key, &[("if-match", &etag), ("range", "bytes=5-")])
        .await;
    assert_eq!((r.status, r.body.as_slice()), (206, &b"56789"[..]));
    let wrong = format!("\"{}\"", md5_hex(b"something else"));
    let r = c.get("src", key, &[("if-match", &wrong)]).await;
    assert_eq!((r.status, r.code().as_str()), (412, "PreconditionFailed"));
    let r = c
        .get("src", key, &[("if-match", &wrong), ("range", "bytes=5-")])
        .await;
    assert_eq!(r.status, 412);
    let r = c
        .send(
            "HEAD",
            &object_path("src", key),
            &[],
            &[("if-match", &wrong)],
            b"",
        )
        .await;
    assert_eq!(r.status, 412);
    // If-None-Match: 304 when it matches.
    let r = c.get("src", key, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = c.get("src", key, &[("if-none-match", &wrong)]).await;
    assert_eq!(r.status, 200);

    // Conditional writes.
    let r = c.put("src", key, &[("if-none-match", "*")], b"new").await;
    assert_eq!((r.status, r.code().as_str()), (412, "PreconditionFailed"));
    let r = c.put("src", key, &[("if-match", &wrong)], b"new").await;
    assert_eq!(r.status, 412);
    let r = c.put("src", key, &[("if-match", &etag)], b"new").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s3.read_object("src", key).unwrap(), b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_and_metadata_round_trip() {
    let s3 = memory_server();
    let mut c = Client::connect(&s3, AK, SK).await;
    let key = "meta/x y+z.json";
    let r = c
        .put(
            "src",
            key,
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("x-amz-meta-color", "blue"),
                ("x-amz-meta-Camel-Case", "Value With Spaces"),
            ],
            b"{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for method in ["GET", "HEAD"] {
        let r = c
            .send(method, &object_path("src", key), &[], &[], b"")
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8"),
            "{method}"
        );
        assert_eq!(r.header("x-amz-meta-color"), Some("blue"), "{method}");
        assert_eq!(r.header("x-amz-meta-camel-case"), Some("Value With Spaces"));
        assert_eq!(r.header("content-length"), Some("2"));
        assert!(r
            .header("last-modified")
            .is_some_and(|v| v.ends_with(" GMT")));
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{}\"", md5_hex(b"{}")).as_str())
        );
    }
    let info = s3.object_info("src", key).unwrap();
    assert_eq!(info.size, 2);
    assert_eq!(
        info.content_type.as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        info.metadata,
        BTreeMap::from([
            ("camel-case".to_string(), "Value With Spaces".to_string()),
            ("color".to_string(), "blue".to_string()),
        ])
    );
    assert_eq!(info.etag, format!("\"{}\"", md5_hex(b"{}")));

    // Without a Content-Type, S3 serves binary/octet-stream.
    c.put("src", "bare", &[], b"x").await;
    let r = c.get("src", "bare", &[]).await;
    assert_eq!(r.header("content-type"), Some("binary/octet-stream"));
    assert!(r
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("x-amz-meta-")));
    assert_eq!(s3.object_info("src", "bare").unwrap().content_type, None);

    // Seeded with the helper: served the same way.
    s3.put_object_with(
        "src",
        "/seeded//key",
        b"seeded",
        Some("text/plain"),
        &[("Origin", "helper"), ("note", "ünïcödé")],
    )
    .unwrap();
    let r = c.get("src", "/seeded//key", &[]).await;
    assert_eq!(r.body, b"seeded");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-amz-meta-origin"), Some("helper"));
    // Non-ASCII metadata is kept as given and sent RFC 2047-encoded.
    assert!(r
        .header("x-amz-meta-note")
        .is_some_and(|v| v.starts_with("=?")));
    assert_eq!(
        s3.object_info("src", "/seeded//key").unwrap().metadata["note"],
        "ünïcödé"
    );
}

/// Uploads `parts` as a multipart upload of `key`; returns (upload id,
/// part ETags).
async fn start_multipart(
    c: &mut Client,
    bucket: &str,
    key: &str,
    headers: &[(&str, &str)],
    parts: &[&[u8]],
) -> (String, Vec<String>) {
    let path = object_path(bucket, key);
    let r = c
        .send("POST", &path, &[("uploads", "")], headers, b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = tag_value(&r.text(), "UploadId").expect("UploadId");
    assert_eq!(tag_value(&r.text(), "Key").as_deref(), Some(key));
    let mut etags = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let n = (i + 1).to_string();
        let r = c
            .send(
                "PUT",
                &path,
                &[("partNumber", &n), ("uploadId", &id)],
                &[],
                part,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let etag = r.header("etag").unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", md5_hex(part)));
        etags.push(etag);
    }
    (id, etags)
}

fn complete_xml(parts: &[(usize, &str)]) -> String {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    xml
}

async fn list_uploads(
    c: &mut Client,
    bucket: &str,
    query: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut q = vec![("uploads", "")];
    q.extend_from_slice(query);
    let r = c.send("GET", &format!("/{bucket}"), &q, &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    blocks(&r.text(), "Upload")
        .into_iter()
        .map(|u| {
            (
                tag_value(u, "Key").expect("Key"),
                tag_value(u, "UploadId").expect("UploadId"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_with_s3s_default_part_minimum() {
    let s3 = memory_server();
    assert_eq!(s3.memory_store().unwrap().min_part_size(), 5 * 1024 * 1024);
    let mut c = Client::connect(&s3, AK, SK).await;
    let big = vec![b'a'; 5 * 1024 * 1024];
    let small = b"tail".to_vec();
    let key = "/backups//2024/../archive.zip";

    // A part under 5 MiB that is not the last: EntityTooSmall, and the
    // upload stays open.
    let (id, etags) = start_multipart(&mut c, "src", key, &[], &[&small, &big]).await;
    let path = object_path("src", key);
    let body = complete_xml(&[(1, &etags[0]), (2, &etags[1])]);
    let r = c
        .send("POST", &path, &[("uploadId", &id)], &[], body.as_bytes())
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "EntityTooSmall"),
        "{}",
        r.text()
    );
    assert_eq!(s3.open_multipart_uploads("src").unwrap(), 1);
    assert_eq!(s3.leftover_part_files().unwrap(), 2);
    let r = c
        .send("DELETE", &path, &[("uploadId", &id)], &[], b"")
        .await;
    assert_eq!(r.status, 204, "{}", r.text());

    // 5 MiB then a small last part: fine.
    let (id, etags) = start_multipart(
        &mut c,
        "src",
        key,
        &[
            ("content-type", "application/zip"),
            ("x-amz-meta-run", "42"),
        ],
        &[&big, &small],
    )
    .await;
    let body = complete_xml(&[(1, &etags[0]), (2, &etags[1])]);
    let r = c
        .send("POST", &path, &[("uploadId", &id)], &[], body.as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut md5s = Md5::checksum(&big).to_vec();
    md5s.extend_from_slice(&Md5::checksum(&small));
    let expected = format!("\"{}-2\"", md5_hex(&md5s));
    assert_eq!(
        tag_value(&r.text(), "ETag").as_deref(),
        Some(expected.as_str())
    );
    let mut whole = big.clone();
    whole.extend_from_slice(&small);
    let r = c.get("src", key, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == whole, "multipart object bytes");
    assert_eq!(r.header("etag"), Some(expected.as_str()));
    assert_eq!(r.header("content-type"), Some("application/zip"));
    assert_eq!(r.header("x-amz-meta-run"), Some("42"));
    assert_eq!(s3.open_multipart_uploads("src").unwrap(), 0);
    assert_eq!(s3.leftover_part_files().unwrap(), 0);
    assert!(list_uploads(&mut c, "src", &[]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_rules_and_listings() {
    let store = MemStore::new().with_min_part_size(4);
    let s3 = S3Server::in_memory_builder()
        .credentials(AK, SK)
        .memory_store(store.clone())
        .start()
        .unwrap();
    s3.create_bucket("dst").unwrap();
    let mut c = Client::connect(&s3, AK, SK).await;

    let (id_a, etags_a) =
        start_multipart(&mut c, "dst", "a/one.zip", &[], &[b"1111", b"2222", b"3"]).await;
    let (id_b, _) = start_multipart(&mut c, "dst", "b/two.zip", &[], &[b"x"]).await;
    let (id_a2, _) = start_multipart(&mut c, "dst", "a/one.zip", &[], &[]).await;
    assert_eq!(s3.open_multipart_uploads("dst").unwrap(), 3);
    assert_eq!(s3.leftover_part_files().unwrap(), 4);
    assert_eq!(store.open_uploads("dst").unwrap().len(), 3);

    // ListMultipartUploads: by key, then oldest first; with a prefix.
    let all = list_uploads(&mut c, "dst", &[]).await;
    assert_eq!(
        all,
        [
            ("a/one.zip".to_string(), id_a.clone()),
            ("a/one.zip".to_string(), id_a2.clone()),
            ("b/two.zip".to_string(), id_b.clone()),
        ]
    );
    let b_only = list_uploads(&mut c, "dst", &[("prefix", "b/")]).await;
    assert_eq!(b_only, [("b/two.zip".to_string(), id_b.clone())]);

    // ListParts.
    let path_a = object_path("dst", "a/one.zip");
    let r = c
        .send("GET", &path_a, &[("uploadId", &id_a)], &[], b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(tag_values(&r.text(), "PartNumber"), ["1", "2", "3"]);
    assert_eq!(tag_values(&r.text(), "ETag"), etags_a);
    assert_eq!(tag_values(&r.text(), "Size"), ["4", "4", "1"]);

    // Completing with bad part lists fails and leaves the upload open.
    let complete = |parts: &[(usize, &str)]| complete_xml(parts);
    for (xml, status, code) in [
        (
            complete(&[(2, &etags_a[1]), (1, &etags_a[0])]),
            400,
            "InvalidPartOrder",
        ),
        (
            complete(&[(1, &etags_a[0]), (1, &etags_a[0])]),
            400,
            "InvalidPartOrder",
        ),
        (complete(&[(1, &etags_a[1])]), 400, "InvalidPart"),
        (
            complete(&[(1, &etags_a[0]), (9, &etags_a[0])]),
            400,
            "InvalidPart",
        ),
        (
            complete(&[
                (3, &etags_a[2]),
                (4, "\"00000000000000000000000000000000\""),
            ]),
            400,
            "InvalidPart",
        ),
        (
            "<CompleteMultipartUpload></CompleteMultipartUpload>".to_string(),
            400,
            "MalformedXML",
        ),
    ] {
        let r = c
            .send("POST", &path_a, &[("uploadId", &id_a)], &[], xml.as_bytes())
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{xml}: {}",
            r.text()
        );
    }
    assert_eq!(s3.open_multipart_uploads("dst").unwrap(), 3);

    // Parts may be skipped; those left out are dropped.
    let xml = complete(&[(1, &etags_a[0]), (3, &etags_a[2])]);
    let r = c
        .send("POST", &path_a, &[("uploadId", &id_a)], &[], xml.as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s3.read_object("dst", "a/one.zip").unwrap(), b"11113");
    let etag = s3.object_info("dst", "a/one.zip").unwrap().etag;
    assert!(etag.ends_with("-2\""), "{etag}");

    // Completed, it is gone: NoSuchUpload for anything else on it.
    let r = c
        .send("POST", &path_a, &[("uploadId", &id_a)], &[], xml.as_bytes())
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "NoSuchUpload"));
    let r = c
        .send(
            "PUT",
            &path_a,
            &[("partNumber", "1"), ("uploadId", &id_a)],
            &[],
            b"late",
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "NoSuchUpload"));
    // An upload id is bound to its key.
    let r = c
        .send("DELETE", &path_a, &[("uploadId", &id_b)], &[], b"")
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "NoSuchUpload"));
    let r = c
        .send(
            "PUT",
            &path_a,
            &[("partNumber", "0"), ("uploadId", &id_a2)],
            &[],
            b"x",
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "InvalidArgument"));

    // Abort the rest: nothing left open.
    for (key, id) in [("a/one.zip", &id_a2), ("b/two.zip", &id_b)] {
        let r = c
            .send(
                "DELETE",
                &object_path("dst", key),
                &[("uploadId", id)],
                &[],
                b"",
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let r = c
        .send("DELETE", &path_a, &[("uploadId", &id_a2)], &[], b"")
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "NoSuchUpload"));
    assert!(list_uploads(&mut c, "dst", &[]).await.is_empty());
    assert_eq!(s3.open_multipart_uploads("dst").unwrap(), 0);
    assert_eq!(s3.leftover_part_files().unwrap(), 0);
    assert_eq!(s3.object_keys("dst").unwrap(), ["a/one.zip"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_not_found_errors() {
    let s3 = memory_server();
    s3.put_object("src", "k", b"v").unwrap();

    let mut bad = Client::connect(&s3, AK, "wrong-secret").await;
    let r = bad.get("src", "k", &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "SignatureDoesNotMatch")
    );
    let r = bad.list("src", &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "SignatureDoesNotMatch")
    );
    let mut unknown = Client::connect(&s3, "NOSUCHKEY", SK).await;
    let r = unknown.get("src", "k", &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());

    let mut c = Client::connect(&s3, AK, SK).await;
    let r = c.get("nope", "k", &[]).await;
    assert_eq!((r.status, r.code().as_str()), (404, "NoSuchBucket"));
    let r = c.list("nope", &[]).await;
    assert_eq!((r.status, r.code().as_str()), (404, "NoSuchBucket"));
    let r = c.put("nope", "k", &[], b"v").await;
    assert_eq!((r.status, r.code().as_str()), (404, "NoSuchBucket"));
    let r = c.get("src", "missing", &[]).await;
    assert_eq!((r.status, r.code().as_str()), (404, "NoSuchKey"));
    let r = c.get("src", "K", &[]).await;
    assert_eq!(r.status, 404, "keys are case-sensitive");
    let r = c
        .send("HEAD", &object_path("src", "missing"), &[], &[], b"")
        .await;
    assert_eq!(r.status, 404);
    let r = c.send("HEAD", "/src", &[], &[], b"").await;
    assert_eq!(r.status, 200);
    let r = c.send("HEAD", "/nope", &[], &[], b"").await;
    assert_eq!(r.status, 404);

    // Buckets: create twice, delete only when empty.
    let r = c.send("PUT", "/src", &[], &[], b"").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "BucketAlreadyOwnedByYou")
    );
    let r = c.send("DELETE", "/src", &[], &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (409, "BucketNotEmpty"));
    let r = c
        .send("DELETE", &object_path("src", "k"), &[], &[], b"")
        .await;
    assert_eq!(r.status, 204);
    let r = c
        .send("DELETE", &object_path("src", "k"), &[], &[], b"")
        .await;
    assert_eq!(r.status, 204, "deleting a missing key succeeds, as in S3");
    let r = c.send("DELETE", "/src", &[], &[], b"").await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = c.send("PUT", "/fresh-bucket", &[], &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.send("GET", "/", &[], &[], b"").await;
    assert_eq!(tag_values(&r.text(), "Name"), ["fresh-bucket"]);
}

/// How s3s 0.14 turns a request path into a key: decoded once, nothing
/// normalized; but the signature covers the decoded path re-encoded, so
/// over-encoded paths do not verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn how_s3s_reads_keys_from_paths() {
    let s3 = memory_server();
    let mut c = Client::connect(&s3, AK, SK).await;
    for (path, key) in [
        ("/src//", "/"),
        ("/src///a", "//a"),
        ("/src/../", "../"),
        ("/src/a/./b/../c", "a/./b/../c"),
        ("/src/%20x%2By%25", " x+y%"),
    ] {
        let r = c.send("PUT", path, &[], &[], key.as_bytes()).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            s3.read_object("src", key).unwrap(),
            key.as_bytes(),
            "{path}"
        );
    }
    // `%2F` for '/' (or `%2E` for '.') decodes to the same key, but the
    // signature made over the path as sent does not match s3s's canonical
    // URI (decoded, then re-encoded with '/' and '.' literal).
    for path in ["/src/a%2Fb", "/src/%2E%2E", "/src/caf%c3%a9"] {
        let r = c.send("PUT", path, &[], &[], b"x").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "SignatureDoesNotMatch"),
            "{path}"
        );
    }
    // The same key with canonical encoding goes through.
    let r = c.put("src", "caf\u{e9}", &[], b"x").await;
    assert_eq!(r.status, 200);

    // In the query, s3s form-decodes: a raw `+` is a space (and is signed
    // as `%20`), so a literal `+` must be sent as `%2B`.
    s3.put_object("src", "c d", b"space").unwrap();
    s3.put_object("src", "c+d", b"plus").unwrap();
    let r = c
        .send_raw(
            "GET",
            "/src",
            "list-type=2&prefix=c+d",
            "list-type=2&prefix=c%20d",
            &[],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(parse_listing(&r.text(), false).keys, ["c d"]);
    let r = c.list("src", &[("prefix", "c+d")]).await;
    assert_eq!(parse_listing(&r.text(), false).keys, ["c+d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpers_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let fs = S3Server::start(dir.path().join("s3"), AK, SK).unwrap();
    let mem = S3Server::start_in_memory(AK, SK).unwrap();
    assert!(!fs.is_in_memory() && mem.is_in_memory());
    assert!(fs.root().is_ok() && mem.root().is_err());
    assert!(fs.object_path("b", "k").is_ok());
    assert!(mem.object_path("b", "k").is_err());

    for s3 in [&fs, &mem] {
        s3.create_bucket("bkt").unwrap();
        s3.create_bucket("bkt").unwrap();
        s3.put_object("bkt", "docs/a.txt", b"aaa").unwrap();
        s3.put_object_with(
            "bkt",
            "docs/b.txt",
            b"bb",
            Some("text/plain"),
            &[("Who", "me")],
        )
        .unwrap();
        assert!(s3.put_object("nope", "k", b"").is_err());
        assert_eq!(s3.object_keys("bkt").unwrap(), ["docs/a.txt", "docs/b.txt"]);
        assert_eq!(
            s3.list_objects("bkt").unwrap(),
            [("docs/a.txt".to_string(), 3), ("docs/b.txt".to_string(), 2)]
        );
        let info = s3.object_info("bkt", "docs/b.txt").unwrap();
        assert_eq!(info.size, 2);
        assert_eq!(info.etag, format!("\"{}\"", md5_hex(b"bb")));
        assert_eq!(info.content_type.as_deref(), Some("text/plain"));
        assert_eq!(info.metadata["who"], "me");
        assert!(s3.object_info("bkt", "docs/c.txt").is_err());

        // What the helpers wrote is what the server serves.
        let mut c = Client::connect(s3, AK, SK).await;
        let r = c.get("bkt", "docs/b.txt", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, b"bb");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("x-amz-meta-who"), Some("me"));
        assert_eq!(r.header("etag"), Some(info.etag.as_str()));

        assert!(s3.delete_object("bkt", "docs/b.txt").unwrap());
        assert!(!s3.delete_object("bkt", "docs/b.txt").unwrap());
        assert_eq!(s3.object_keys("bkt").unwrap(), ["docs/a.txt"]);
        assert_eq!(s3.read_object("bkt", "docs/a.txt").unwrap(), b"aaa");
        assert_eq!(s3.open_multipart_uploads("bkt").unwrap(), 0);
        assert_eq!(s3.leftover_part_files().unwrap(), 0);
    }

    // Only the memory backend takes keys that are not file paths.
    for key in ["/", "../", "a//b", "folder/", "/lead", "x/./y"] {
        assert!(fs.put_object("bkt", key, b"").is_err(), "{key:?}");
        mem.put_object("bkt", key, b"").unwrap();
        assert_eq!(mem.read_object("bkt", key).unwrap(), b"");
    }
    assert!(mem.put_object("bkt", "", b"").is_err());
    assert!(mem.put_object("bkt", &"k".repeat(1025), b"").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_objects_and_list_objects_v1() {
    let s3 = memory_server();
    for key in ["a/1", "a/2", "b", "/", "x y"] {
        s3.put_object("src", key, b"v").unwrap();
    }
    let mut c = Client::connect(&s3, AK, SK).await;

    // ListObjects (v1): marker paging; NextMarker only with a delimiter.
    let r = c.send("GET", "/src", &[("max-keys", "2")], &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(parse_listing_v1(&r.text()), ["/", "a/1"]);
    assert_eq!(tag_value(&r.text(), "IsTruncated").as_deref(), Some("true"));
    assert_eq!(tag_value(&r.text(), "NextMarker"), None);
    let r = c
        .send(
            "GET",
            "/src",
            &[("marker", "a/1"), ("delimiter", "/"), ("max-keys", "1")],
            &[],
            b"",
        )
        .await;
    assert_eq!(blocks(&r.text(), "CommonPrefixes").len(), 0);
    assert_eq!(parse_listing_v1(&r.text()), ["b"]);
    assert_eq!(tag_value(&r.text(), "NextMarker").as_deref(), Some("b"));

    // DeleteObjects, one of the keys missing (not an error in S3).
    let body = "<Delete><Object><Key>/</Key></Object><Object><Key>a/2</Key></Object>\
                <Object><Key>missing</Key></Object><Object><Key>x y</Key></Object></Delete>";
    let md5 = {
        use base64_like::encode;
        encode(&Md5::checksum(body.as_bytes()))
    };
    let r = c
        .send(
            "POST",
            "/src",
            &[("delete", "")],
            &[("content-md5", &md5)],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deleted: Vec<String> = blocks(&r.text(), "Deleted")
        .into_iter()
        .map(|d| tag_value(d, "Key").unwrap())
        .collect();
    assert_eq!(deleted, ["/", "a/2", "missing", "x y"]);
    assert_eq!(s3.object_keys("src").unwrap(), ["a/1", "b"]);
}

fn parse_listing_v1(xml: &str) -> Vec<String> {
    blocks(xml, "Contents")
        .into_iter()
        .map(|c| tag_value(c, "Key").unwrap())
        .collect()
}

/// Standard base64 with padding, for Content-MD5.
mod base64_like {
    pub fn encode(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_md5_is_checked() {
    let s3 = memory_server();
    let mut c = Client::connect(&s3, AK, SK).await;
    let good = base64_like::encode(&Md5::checksum(b"data"));
    let r = c.put("src", "k", &[("content-md5", &good)], b"data").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.put("src", "k", &[("content-md5", &good)], b"other").await;
    assert_eq!((r.status, r.code().as_str()), (400, "BadDigest"));
    let r = c
        .put("src", "k", &[("content-md5", "bm90LW1kNQ==")], b"data")
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "InvalidDigest"));
    assert_eq!(s3.read_object("src", "k").unwrap(), b"data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_request_log_in_memory() {
    use spaces_backup_testkit::server::Fault;
    let s3 = S3Server::in_memory_builder()
        .credentials(AK, SK)
        .fault(|req| match req.operation() {
            "ListObjectsV2" if req.seq == 1 => Fault::Status {
                status: 503,
                code: "SlowDown".into(),
            },
            "GetObject" if !req.headers.contains_key("range") => Fault::CutOff(3),
            _ => Fault::Pass,
        })
        .start()
        .unwrap();
    s3.create_bucket("src").unwrap();
    s3.put_object("src", "//k", b"0123456789").unwrap();
    let mut c = Client::connect(&s3, AK, SK).await;
    let r = c.list("src", &[]).await;
    assert_eq!((r.status, r.code().as_str()), (503, "SlowDown"));
    let r = c.list("src", &[]).await;
    assert_eq!(parse_listing(&r.text(), false).keys, ["//k"]);
    let r = c.get("src", "//k", &[("range", "bytes=4-")]).await;
    assert_eq!((r.status, r.body.as_slice()), (206, &b"456789"[..]));

    let log = s3.requests();
    let ops: Vec<&str> = log.iter().map(|r| r.operation).collect();
    assert_eq!(ops, ["ListObjectsV2", "ListObjectsV2", "GetObject"]);
    assert_eq!(log[0].status, Some(503));
    assert_eq!(log[2].path, "/src///k");
    assert_eq!(log[2].range.as_deref(), Some("bytes=4-"));
}

/// With R2's rule, parts but the last must be of one size: 5 MiB then 6 MiB is refused
/// (`InvalidPart`, the upload stays), equal parts and a shorter last one are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_parts_when_asked() {
    let s3 = memory_server();
    s3.memory_store().unwrap().set_equal_parts(true);
    let mut c = Client::connect(&s3, AK, SK).await;
    let five = vec![b'a'; 5 * 1024 * 1024];
    let six = vec![b'b'; 6 * 1024 * 1024];
    let path = object_path("src", "r2.zip");
    let (id, etags) = start_multipart(&mut c, "src", "r2.zip", &[], &[&five, &six, b"end"]).await;
    let body = complete_xml(&[(1, &etags[0]), (2, &etags[1]), (3, &etags[2])]);
    let r = c
        .send("POST", &path, &[("uploadId", &id)], &[], body.as_bytes())
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "InvalidPart"),
        "{}",
        r.text()
    );
    assert_eq!(s3.open_multipart_uploads("src").unwrap(), 1);

    let (id, etags) = start_multipart(&mut c, "src", "r2.zip", &[], &[&five, &five, b"end"]).await;
    let body = complete_xml(&[(1, &etags[0]), (2, &etags[1]), (3, &etags[2])]);
    let r = c
        .send("POST", &path, &[("uploadId", &id)], &[], body.as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s3.read_object("src", "r2.zip").unwrap().len(),
        10 * 1024 * 1024 + 3
    );
}

/// One UploadPartCopy of `range` of `source` into part `n` of upload `id` of `path`.
async fn copy_part(
    c: &mut Client,
    (path, id): (&str, &str),
    n: &str,
    source: &str,
    range: &str,
    extra: &[(&str, &str)],
) -> spaces_backup_testkit::client::Reply {
    let mut headers = vec![
        ("x-amz-copy-source", source),
        ("x-amz-copy-source-range", range),
    ];
    headers.extend_from_slice(extra);
    c.send(
        "PUT",
        path,
        &[("partNumber", n), ("uploadId", id)],
        &headers,
        b"",
    )
    .await
}

/// UploadPartCopy: parts taken from byte ranges of existing objects (the server-side
/// copy a composed archive is built with), mixed with an uploaded part; ranges, the
/// source's ETag condition and a missing source checked; and refused on request, as a
/// service without it (or Spaces across regions) refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_part_copy_from_ranges_of_objects() {
    let s3 = memory_server();
    let mut c = Client::connect(&s3, AK, SK).await;
    const MIB: usize = 1024 * 1024;
    let first: Vec<u8> = (0..7 * MIB).map(|i| (i * 31 % 251) as u8).collect();
    let second: Vec<u8> = (0..6 * MIB).map(|i| (i * 17 % 241) as u8).collect();
    s3.put_object("src", "frag/1.zip", &first).unwrap();
    s3.put_object("src", "frag/2 & more.zip", &second).unwrap();
    let etag_of_first = format!("\"{}\"", md5_hex(&first));
    let key = "out/composed.zip";
    let (id, _) = start_multipart(&mut c, "src", key, &[], &[]).await;
    let path = object_path("src", key);
    // Part 1: 5 MiB from the middle of the first; part 2 uploaded; part 3: the rest of
    // the second from byte 1 MiB.
    let r = copy_part(
        &mut c,
        (&path, &id),
        "1",
        "/src/frag/1.zip",
        &format!("bytes={}-{}", MIB, 6 * MIB - 1),
        &[("x-amz-copy-source-if-match", &etag_of_first)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let etag1 = tag_value(&r.text(), "ETag").expect("ETag");
    assert_eq!(etag1, format!("\"{}\"", md5_hex(&first[MIB..6 * MIB])));
    // Source keys arrive URL-encoded.
    let r = copy_part(
        &mut c,
        (&path, &id),
        "3",
        "/src/frag/2%20%26%20more.zip",
        &format!("bytes={}-{}", MIB, 6 * MIB - 1),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let etag3 = tag_value(&r.text(), "ETag").expect("ETag");

    // Refused: past the end, reversed, open-ended, a changed source, a missing one.
    for (source, range, extra, status, code) in [
        (
            "/src/frag/1.zip",
            format!("bytes=0-{}", 7 * MIB),
            None,
            416,
            "InvalidRange",
        ),
        (
            "/src/frag/1.zip",
            "bytes=9-3".to_string(),
            None,
            416,
            "InvalidRange",
        ),
        (
            "/src/frag/1.zip",
            "bytes=5-".to_string(),
            None,
            400,
            "InvalidArgument",
        ),
        (
            "/src/frag/1.zip",
            "bytes=0-9".to_string(),
            Some("\"0000\""),
            412,
            "PreconditionFailed",
        ),
        (
            "/src/frag/none.zip",
            "bytes=0-9".to_string(),
            None,
            404,
            "NoSuchKey",
        ),
    ] {
        let extra: Vec<(&str, &str)> = extra
            .map(|e| vec![("x-amz-copy-source-if-match", e)])
            .unwrap_or_default();
        let r = copy_part(&mut c, (&path, &id), "4", source, &range, &extra).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{range}: {}",
            r.text()
        );
    }

    let tail = b"end of the archive".to_vec();
    let r = c
        .send(
            "PUT",
            &path,
            &[("partNumber", "2"), ("uploadId", &id)],
            &[],
            &second[..5 * MIB],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let etag2 = r.header("etag").unwrap().to_string();
    let r = c
        .send(
            "PUT",
            &path,
            &[("partNumber", "4"), ("uploadId", &id)],
            &[],
            &tail,
        )
        .await;
    let etag4 = r.header("etag").unwrap().to_string();
    let body = complete_xml(&[(1, &etag1), (2, &etag2), (3, &etag3), (4, &etag4)]);
    let r = c
        .send("POST", &path, &[("uploadId", &id)], &[], body.as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut whole = first[MIB..6 * MIB].to_vec();
    whole.extend_from_slice(&second[..5 * MIB]);
    whole.extend_from_slice(&second[MIB..6 * MIB]);
    whole.extend_from_slice(&tail);
    let r = c.get("src", key, &[]).await;
    assert!(r.body == whole, "the composed object's bytes");

    // Refused outright, on request.
    s3.memory_store().unwrap().set_no_part_copy(true);
    let (id, _) = start_multipart(&mut c, "src", "out/other.zip", &[], &[]).await;
    let r = c
        .send(
            "PUT",
            &object_path("src", "out/other.zip"),
            &[("partNumber", "1"), ("uploadId", &id)],
            &[
                ("x-amz-copy-source", "/src/frag/1.zip"),
                ("x-amz-copy-source-range", "bytes=0-9"),
            ],
            b"",
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (501, "NotImplemented"),
        "{}",
        r.text()
    );
}
