//! The test kit's own tests: its S3 servers (s3s-fs and the in-memory store) over HTTP
//! with SigV4, driven by the signed test client.

mod memstore;
mod server;
