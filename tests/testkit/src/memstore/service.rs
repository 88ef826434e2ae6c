//! The S3 operations, as s3s calls them.

use super::*;

/// The grants and tags a PutObject or CreateMultipartUpload input asks for: a canned
/// ACL (`x-amz-acl`), else `x-amz-grant-*` (exactly those grants), else private.
macro_rules! access_of {
    ($input:expr) => {
        parse_access(
            $input.acl.as_ref().map(|a| a.as_str()),
            &[
                ("FULL_CONTROL", &$input.grant_full_control),
                ("READ", &$input.grant_read),
                ("READ_ACP", &$input.grant_read_acp),
                ("WRITE_ACP", &$input.grant_write_acp),
            ],
            $input.tagging.as_deref(),
        )
    };
}

/// Tags, in order.
type Tags = Vec<(String, String)>;

fn parse_access(
    canned: Option<&str>,
    grants: &[(&str, &Option<String>)],
    tagging: Option<&str>,
) -> S3Result<(Vec<MemGrant>, Tags)> {
    let mut acl = Vec::new();
    for (permission, value) in grants {
        for who in value.iter().flat_map(|v| v.split(',')) {
            let Some((kind, name)) = who.trim().split_once('=') else {
                return Err(s3_error!(InvalidArgument, "malformed grant: {who}"));
            };
            if !matches!(kind, "id" | "uri" | "emailAddress") {
                return Err(s3_error!(InvalidArgument, "unknown grantee kind: {kind}"));
            }
            acl.push(MemGrant::new(
                &format!("{kind}={}", name.trim_matches('"')),
                permission,
            ));
        }
    }
    if let Some(name) = canned {
        if !acl.is_empty() {
            return Err(s3_error!(
                InvalidRequest,
                "specifying both a canned ACL and grant headers is not allowed"
            ));
        }
        acl = MemGrant::canned(name)
            .ok_or_else(|| s3_error!(InvalidArgument, "unknown canned ACL: {name}"))?;
    }
    if acl.is_empty() {
        acl = MemGrant::canned("private").unwrap_or_default();
    }
    let tags = tagging
        .map(|t| form_urlencoded::parse(t.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    Ok((acl, tags))
}

/// The standard headers a PutObject or CreateMultipartUpload input carries (two
/// generated types with the same fields).
macro_rules! headers_of {
    ($input:expr) => {
        ObjectHeaders {
            cache_control: $input.cache_control,
            content_disposition: $input.content_disposition,
            content_encoding: $input.content_encoding,
            content_language: $input.content_language,
            expires: ObjectHeaders::from_timestamp($input.expires.as_ref()),
            website_redirect_location: $input.website_redirect_location,
            storage_class: $input.storage_class.map(|c| c.as_str().to_string()),
        }
    };
}

#[async_trait::async_trait]
impl S3 for MemStore {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        if !MemStore::create_bucket(self, &bucket) {
            return Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it."
            ));
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        let mut state = self.lock();
        let b = state.buckets.get(&bucket).ok_or_else(no_such_bucket)?;
        if !b.objects.is_empty() {
            return Err(s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete is not empty"
            ));
        }
        state.buckets.remove(&bucket);
        state.uploads.retain(|_, u| u.bucket != bucket);
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let state = self.lock();
        let buckets = state
            .buckets
            .iter()
            .map(|(name, b)| Bucket {
                name: Some(name.clone()),
                creation_date: Some(Timestamp::from(b.created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let cors_rules = self.settings_of(&req.input.bucket)?.cors;
        if cors_rules.is_none() {
            return Err(s3_error!(
                NoSuchCORSConfiguration,
                "The CORS configuration does not exist"
            ));
        }
        Ok(S3Response::new(GetBucketCorsOutput { cors_rules }))
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let input = req.input;
        let rules = input.cors_configuration.cors_rules;
        self.change_settings(&input.bucket, |s| s.cors = Some(rules))?;
        Ok(S3Response::new(PutBucketCorsOutput::default()))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let rules = self.settings_of(&req.input.bucket)?.lifecycle;
        if rules.is_none() {
            return Err(s3_error!(
                NoSuchLifecycleConfiguration,
                "The lifecycle configuration does not exist"
            ));
        }
        Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
            rules,
            ..Default::default()
        }))
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let input = req.input;
        let rules = input
            .lifecycle_configuration
            .map(|c| c.rules)
            .ok_or_else(|| s3_error!(MalformedXML, "no LifecycleConfiguration"))?;
        self.change_settings(&input.bucket, |s| s.lifecycle = Some(rules))?;
        Ok(S3Response::new(
            PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let policy = self.settings_of(&req.input.bucket)?.policy;
        if policy.is_none() {
            return Err(s3_error!(
                NoSuchBucketPolicy,
                "The bucket policy does not exist"
            ));
        }
        Ok(S3Response::new(GetBucketPolicyOutput { policy }))
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let input = req.input;
        if serde_json::from_str::<serde_json::Value>(&input.policy).is_err() {
            return Err(s3_error!(MalformedPolicy, "Policies must be valid JSON"));
        }
        let policy = input.policy;
        self.change_settings(&input.bucket, |s| s.policy = Some(policy))?;
        Ok(S3Response::new(PutBucketPolicyOutput::default()))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let status = self
            .settings_of(&req.input.bucket)?
            .versioning
            .map(BucketVersioningStatus::from);
        Ok(S3Response::new(GetBucketVersioningOutput {
            status,
            ..Default::default()
        }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let input = req.input;
        let status = input
            .versioning_configuration
            .status
            .map(|s| s.as_str().to_string())
            .filter(|s| s == "Enabled" || s == "Suspended")
            .ok_or_else(|| s3_error!(MalformedXML, "Status is Enabled or Suspended"))?;
        self.change_settings(&input.bucket, |s| s.versioning = Some(status))?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket)?;
        let (data, md5, checksum) = checked_body!(input, req.trailing_headers.as_ref());
        let etag = hex(&md5);
        let size = to_i64(data.len());
        let metadata = input.metadata.unwrap_or_default().into_iter().collect();
        let headers = headers_of!(input);
        let (acl, tags) = access_of!(input)?;
        let object = StoredObject::new(data, etag.clone(), input.content_type, metadata)
            .with_headers(headers)
            .with_access(acl, tags);

        let mut state = self.lock();
        let b = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        check_write_preconditions(
            b.objects.get(&input.key),
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?;
        b.objects.insert(input.key, object);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            size: Some(size),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        if input.part_number.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "GetObject with partNumber is not supported by this server"
            ));
        }
        let object = self.lookup(&input.bucket, &input.key)?;
        check_read_preconditions(
            &object,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let (body, content_range) = apply_range(&object.data, input.range)?;
        Ok(S3Response::new(GetObjectOutput {
            content_length: Some(to_i64(body.len())),
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            content_range,
            accept_ranges: Some("bytes".to_string()),
            content_type: Some(object.served_content_type()),
            e_tag: Some(object.e_tag()),
            last_modified: Some(object.timestamp()),
            metadata: object.served_metadata(),
            cache_control: object.headers.cache_control.clone(),
            content_disposition: object.headers.content_disposition.clone(),
            content_encoding: object.headers.content_encoding.clone(),
            content_language: object.headers.content_language.clone(),
            expires: object.headers.expires_timestamp(),
            website_redirect_location: object.headers.website_redirect_location.clone(),
            storage_class: object.headers.storage_class.clone().map(StorageClass::from),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let object = self.lookup(&input.bucket, &input.key)?;
        check_read_preconditions(
            &object,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let (body, content_range) = apply_range(&object.data, input.range)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(to_i64(body.len())),
            content_range,
            accept_ranges: Some("bytes".to_string()),
            content_type: Some(object.served_content_type()),
            e_tag: Some(object.e_tag()),
            last_modified: Some(object.timestamp()),
            metadata: object.served_metadata(),
            cache_control: object.headers.cache_control.clone(),
            content_disposition: object.headers.content_disposition.clone(),
            content_encoding: object.headers.content_encoding.clone(),
            content_language: object.headers.content_language.clone(),
            expires: object.headers.expires_timestamp(),
            website_redirect_location: object.headers.website_redirect_location.clone(),
            storage_class: object.headers.storage_class.clone().map(StorageClass::from),
            ..Default::default()
        }))
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let object = self.lookup(&req.input.bucket, &req.input.key)?;
        let grants = object
            .acl
            .iter()
            .map(|g| {
                let (kind, name) = g.grantee.split_once('=').unwrap_or(("id", &g.grantee));
                let name = Some(name.to_string());
                let mut grantee = Grantee {
                    type_: Type::from_static(Type::CANONICAL_USER),
                    display_name: None,
                    email_address: None,
                    id: None,
                    uri: None,
                };
                match kind {
                    "uri" => {
                        grantee.type_ = Type::from_static(Type::GROUP);
                        grantee.uri = name;
                    }
                    "emailAddress" => {
                        grantee.type_ = Type::from_static(Type::AMAZON_CUSTOMER_BY_EMAIL);
                        grantee.email_address = name;
                    }
                    _ => grantee.id = name,
                }
                Grant {
                    grantee: Some(grantee),
                    permission: Some(Permission::from(g.permission.clone())),
                }
            })
            .collect();
        Ok(S3Response::new(GetObjectAclOutput {
            grants: Some(grants),
            owner: Some(Owner {
                id: Some(OWNER_ID.to_string()),
                display_name: Some("memstore".into()),
            }),
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let object = self.lookup(&req.input.bucket, &req.input.key)?;
        let tag_set = object
            .tags
            .iter()
            .map(|(k, v)| Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect();
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set,
            version_id: None,
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let mut state = self.lock();
        let b = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        if let Some(c) = &input.if_match {
            match b.objects.get(&input.key) {
                None => return Err(no_such_key()),
                Some(o) if !etag_matches(c, &o.e_tag()) => return Err(precondition_failed()),
                Some(_) => {}
            }
        }
        b.objects.remove(&input.key);
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut state = self.lock();
        let b = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        let mut deleted = Vec::new();
        for object in input.delete.objects {
            b.objects.remove(&object.key);
            if !quiet {
                deleted.push(DeletedObject {
                    key: Some(object.key),
                    version_id: object.version_id,
                    ..Default::default()
                });
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let url = url_encoding(input.encoding_type.as_ref())?;
        let max = list_limit(input.max_keys, "max-keys")?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        // A continuation token, when given, says where to go on from;
        // start-after only applies to the first page.
        let after = match &input.continuation_token {
            Some(token) => Some(decode_token(token)?),
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };

        let state = self.lock();
        let b = state
            .buckets
            .get(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        let page = list_page(
            object_range(&b.objects, &prefix, after.as_deref()),
            &prefix,
            delimiter,
            after.as_deref(),
            max,
        );
        let mut contents = Vec::new();
        let mut common_prefixes = Vec::new();
        for entry in &page.entries {
            match entry {
                Entry::Item(key, o) => contents.push(object_entry(key, o, url)),
                Entry::Prefix(p) => common_prefixes.push(CommonPrefix {
                    prefix: Some(encode_if(url, p)),
                }),
            }
        }
        let next = page.last.filter(|_| page.truncated).map(encode_token);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, &prefix)),
            delimiter: input.delimiter.map(|d| encode_if(url, &d)),
            start_after: input.start_after.map(|s| encode_if(url, &s)),
            max_keys: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            key_count: Some(i32::try_from(page.entries.len()).unwrap_or(i32::MAX)),
            is_truncated: Some(page.truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let url = url_encoding(input.encoding_type.as_ref())?;
        let max = list_limit(input.max_keys, "max-keys")?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        let after = input.marker.as_deref().filter(|m| !m.is_empty());

        let state = self.lock();
        let b = state
            .buckets
            .get(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        let page = list_page(
            object_range(&b.objects, &prefix, after),
            &prefix,
            delimiter,
            after,
            max,
        );
        let mut contents = Vec::new();
        let mut common_prefixes = Vec::new();
        for entry in &page.entries {
            match entry {
                Entry::Item(key, o) => contents.push(object_entry(key, o, url)),
                Entry::Prefix(p) => common_prefixes.push(CommonPrefix {
                    prefix: Some(encode_if(url, p)),
                }),
            }
        }
        // S3 sends NextMarker only with a delimiter; without one, clients
        // go on from the last key.
        let next_marker = page
            .last
            .filter(|_| page.truncated && delimiter.is_some())
            .map(|m| encode_if(url, m));
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, &prefix)),
            marker: Some(encode_if(url, input.marker.as_deref().unwrap_or(""))),
            delimiter: input.delimiter.map(|d| encode_if(url, &d)),
            max_keys: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            is_truncated: Some(page.truncated),
            next_marker,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let (acl, tags) = access_of!(input)?;
        let mut state = self.lock();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(no_such_bucket());
        }
        state.upload_seq += 1;
        let seq = state.upload_seq;
        let id = new_upload_id(seq);
        state.uploads.insert(
            id.clone(),
            UploadState {
                bucket: input.bucket.clone(),
                key: input.key.clone(),
                seq,
                initiated: SystemTime::now(),
                content_type: input.content_type,
                metadata: input.metadata.unwrap_or_default().into_iter().collect(),
                headers: headers_of!(input),
                acl,
                tags,
                parts: BTreeMap::new(),
            },
        );
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            checksum_algorithm: input.checksum_algorithm,
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        let is_open = |state: &State| {
            state
                .uploads
                .get(&input.upload_id)
                .is_some_and(|u| u.bucket == input.bucket && u.key == input.key)
        };
        {
            let state = self.lock();
            if !state.buckets.contains_key(&input.bucket) {
                return Err(no_such_bucket());
            }
            if !is_open(&state) {
                return Err(no_such_upload());
            }
        }
        let (data, md5, checksum) = checked_body!(input, req.trailing_headers.as_ref());

        let mut state = self.lock();
        // Aborted or completed while the body was coming in?
        if !is_open(&state) {
            return Err(no_such_upload());
        }
        if let Some(upload) = state.uploads.get_mut(&input.upload_id) {
            upload.parts.insert(
                input.part_number,
                StoredPart {
                    data,
                    md5,
                    last_modified: SystemTime::now(),
                },
            );
        }
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(hex(&md5))),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            ..Default::default()
        }))
    }

    /// A part copied from bytes of an existing object (`x-amz-copy-source`, and
    /// `x-amz-copy-source-range: bytes=first-last`, both ends given, as S3 and MinIO want
    /// them), checked like the ranges of a GET; the part then counts as any other.
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        if self.lock().no_part_copy {
            return Err(s3_error!(
                NotImplemented,
                "UploadPartCopy is not supported by this server"
            ));
        }
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket {
                bucket,
                key,
                version_id: None,
            } => (bucket.to_string(), key.to_string()),
            _ => {
                return Err(s3_error!(
                    NotImplemented,
                    "only a copy source of the form bucket/key is supported"
                ))
            }
        };
        let source = self.lookup(&src_bucket, &src_key)?;
        let etag = source.e_tag();
        if let Some(c) = &input.copy_source_if_match {
            if !etag_matches(c, &etag) {
                return Err(precondition_failed());
            }
        }
        if let Some(c) = &input.copy_source_if_none_match {
            if etag_matches(c, &etag) {
                return Err(precondition_failed());
            }
        }
        let len = source.data.len() as u64;
        let (first, last) = match input.copy_source_range.as_deref() {
            None => (0, len.saturating_sub(1)),
            Some(r) => {
                let bad = || {
                    s3_error!(
                        InvalidArgument,
                        "The x-amz-copy-source-range value must be of the form bytes=first-last"
                    )
                };
                let (a, b) = r
                    .strip_prefix("bytes=")
                    .and_then(|r| r.split_once('-'))
                    .ok_or_else(bad)?;
                let a: u64 = a.parse().map_err(|_| bad())?;
                let b: u64 = b.parse().map_err(|_| bad())?;
                (a, b)
            }
        };
        if first > last || last >= len {
            return Err(s3_error!(
                InvalidRange,
                "The requested range is not satisfiable"
            ));
        }
        let data = source.data.slice(first as usize..=last as usize);
        let md5 = Md5::checksum(&data);
        let mut state = self.lock();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(no_such_bucket());
        }
        let Some(upload) = state
            .uploads
            .get_mut(&input.upload_id)
            .filter(|u| u.bucket == input.bucket && u.key == input.key)
        else {
            return Err(no_such_upload());
        };
        let now = SystemTime::now();
        upload.parts.insert(
            input.part_number,
            StoredPart {
                data,
                md5,
                last_modified: now,
            },
        );
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(hex(&md5))),
                last_modified: Some(Timestamp::from(now)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();

        let mut state = self.lock();
        let min_part_size = state.min_part_size;
        let equal_parts = state.equal_parts;
        let upload = state
            .uploads
            .get(&input.upload_id)
            .filter(|u| u.bucket == input.bucket && u.key == input.key)
            .ok_or_else(no_such_upload)?;
        if listed.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            ));
        }
        let mut previous = 0;
        let mut chosen = Vec::with_capacity(listed.len());
        for part in &listed {
            let Some(number) = part.part_number else {
                return Err(s3_error!(
                    MalformedXML,
                    "The XML you provided was not well-formed or did not validate against our published schema"
                ));
            };
            if number <= previous {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "The list of parts was not in ascending order. Parts must be ordered by part number."
                ));
            }
            previous = number;
            let stored = upload.parts.get(&number).ok_or_else(invalid_part)?;
            let given = part.e_tag.as_ref().map(ETag::value);
            if given != Some(hex(&stored.md5).as_str()) {
                return Err(invalid_part());
            }
            chosen.push(stored);
        }
        // Sizes once every listed part is known to be there.
        if let Some((_, all_but_last)) = chosen.split_last() {
            if all_but_last
                .iter()
                .any(|p| (p.data.len() as u64) < min_part_size)
            {
                return Err(s3_error!(
                    EntityTooSmall,
                    "Your proposed upload is smaller than the minimum allowed object size."
                ));
            }
            let first = all_but_last.first().map(|p| p.data.len());
            if equal_parts && all_but_last.iter().any(|p| Some(p.data.len()) != first) {
                return Err(s3_error!(
                    InvalidPart,
                    "All non-trailing parts must have the same length."
                ));
            }
        }

        let total = chosen.iter().map(|p| p.data.len()).sum();
        let mut data = BytesMut::with_capacity(total);
        let mut md5s = Vec::with_capacity(chosen.len() * 16);
        for part in &chosen {
            data.extend_from_slice(&part.data);
            md5s.extend_from_slice(&part.md5);
        }
        let etag = format!("{}-{}", hex(&Md5::checksum(&md5s)), chosen.len());
        let object = StoredObject::new(
            data.freeze(),
            etag.clone(),
            upload.content_type.clone(),
            upload.metadata.clone(),
        )
        .with_headers(upload.headers.clone())
        .with_access(upload.acl.clone(), upload.tags.clone());

        let b = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        check_write_preconditions(
            b.objects.get(&input.key),
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?;
        b.objects.insert(input.key.clone(), object);
        state.uploads.remove(&input.upload_id);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let mut state = self.lock();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(no_such_bucket());
        }
        let open = state
            .uploads
            .get(&input.upload_id)
            .is_some_and(|u| u.bucket == input.bucket && u.key == input.key);
        if !open {
            return Err(no_such_upload());
        }
        state.uploads.remove(&input.upload_id);
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let url = url_encoding(input.encoding_type.as_ref())?;
        let max = list_limit(input.max_uploads, "max-uploads")?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());

        let state = self.lock();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(no_such_bucket());
        }
        let mut uploads: Vec<(&String, &UploadState)> = state
            .uploads
            .iter()
            .filter(|(_, u)| u.bucket == input.bucket)
            .collect();
        uploads.sort_by(|a, b| (&a.1.key, a.1.seq).cmp(&(&b.1.key, b.1.seq)));
        // key-marker alone: keys after it; with upload-id-marker: also that
        // key's uploads created after the marker upload.
        let key_marker = input.key_marker.as_deref().filter(|k| !k.is_empty());
        let id_marker_seq = input
            .upload_id_marker
            .as_deref()
            .and_then(|id| state.uploads.get(id))
            .map(|u| u.seq);
        let items = uploads.into_iter().filter(|(_, u)| match key_marker {
            None => true,
            Some(km) => {
                u.key.as_str() > km || (u.key == km && id_marker_seq.is_some_and(|seq| u.seq > seq))
            }
        });
        let page = list_page(
            items.map(|(id, u)| (u.key.as_str(), (id, u))),
            &prefix,
            delimiter,
            None,
            max,
        );
        let mut listed = Vec::new();
        let mut common_prefixes = Vec::new();
        let mut next_markers = None;
        for entry in &page.entries {
            match entry {
                Entry::Item(key, (id, u)) => {
                    next_markers = Some((*key, id.as_str()));
                    listed.push(MultipartUpload {
                        key: Some(encode_if(url, key)),
                        upload_id: Some((*id).clone()),
                        initiated: Some(Timestamp::from(u.initiated)),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    });
                }
                Entry::Prefix(p) => {
                    next_markers = Some((*p, ""));
                    common_prefixes.push(CommonPrefix {
                        prefix: Some(encode_if(url, p)),
                    });
                }
            }
        }
        let (next_key_marker, next_upload_id_marker) = match next_markers {
            Some((key, id)) if page.truncated => (Some(encode_if(url, key)), Some(id.to_string())),
            _ => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(encode_if(url, &prefix)),
            delimiter: input.delimiter.map(|d| encode_if(url, &d)),
            key_marker: Some(encode_if(url, input.key_marker.as_deref().unwrap_or(""))),
            upload_id_marker: Some(input.upload_id_marker.unwrap_or_default()),
            next_key_marker,
            next_upload_id_marker,
            max_uploads: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            is_truncated: Some(page.truncated),
            uploads: Some(listed),
            common_prefixes: Some(common_prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let max = list_limit(input.max_parts, "max-parts")?;
        let marker = input.part_number_marker.unwrap_or(0);
        let state = self.lock();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(no_such_bucket());
        }
        let upload = state
            .uploads
            .get(&input.upload_id)
            .filter(|u| u.bucket == input.bucket && u.key == input.key)
            .ok_or_else(no_such_upload)?;
        let mut after = upload
            .parts
            .range((Bound::Excluded(marker), Bound::Unbounded))
            .peekable();
        let mut parts = Vec::new();
        while parts.len() < max {
            let Some((number, part)) = after.next() else {
                break;
            };
            parts.push(Part {
                part_number: Some(*number),
                e_tag: Some(ETag::Strong(hex(&part.md5))),
                size: Some(to_i64(part.data.len())),
                last_modified: Some(Timestamp::from(part.last_modified)),
                ..Default::default()
            });
        }
        let truncated = max > 0 && after.peek().is_some();
        let next = parts.last().and_then(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: Some(marker),
            next_part_number_marker: next.filter(|_| truncated),
            max_parts: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            is_truncated: Some(truncated),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            parts: Some(parts),
            ..Default::default()
        }))
    }
}
