//! The ZIP format, shared by writing and reading: [`spec`] holds the records and
//! constants, [`write`] the stream writer the backup uses, [`read`] the readers over any
//! `std::io::Read`, [`manifest`] the manifest's line type both ways, [`settings`] the bucket's
//! settings entry, and [`remote`] an archive in a bucket.

pub mod manifest;
pub mod read;
pub mod remote;
pub mod settings;
pub mod spec;
pub mod write;
