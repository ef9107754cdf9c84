//! berth's factory (build plane): source in, OCI image out.
//!
//! - [`source`] packs an app directory for upload (honouring `.gitignore` and
//!   `.dockerignore`, within a size limit, refusing links out of it); [`archive`] reads and
//!   unpacks uploads within bounds (size, entries, compression ratio, links kept inside);
//!   [`tree`] reads the files of a source directory beneath its root (`openat2`).
//! - [`providers`] detect how to build a directory: one provider per language, each turning a
//!   directory into a [`plan::BuildPlan`], plain data that is snapshot-tested per example.
//! - [`builder`] executes a plan inside a container on the same runtime as apps, sharing the
//!   host's network and toolchains ("host stack") with a per-app build cache.
//! - [`image`] writes and reads OCI image layouts: the built app as a layer, its processes in
//!   the image config, tagged immutably; images that bring their own root filesystem too.
//! - [`dockerfile`] builds Dockerfiles with buildah, unprivileged, every `FROM` resolved by
//!   berth; [`foreign`] takes in pulled and Dockerfile-built images and reads how to run
//!   them; [`registry`] pulls and pushes with skopeo.
//! - [`sbom`] the SPDX inventory of an image's package databases; [`signing`] cosign-format
//!   signatures of images with the platform's key; [`vulns`] the gate of an SBOM against an
//!   offline OSV database.
#![forbid(unsafe_code)]

pub mod archive;
pub mod build_user;
pub mod builder;
pub mod dockerfile;
pub mod foreign;
pub mod git;
pub mod git_repos;
pub mod image;
pub mod plan;
pub mod providers;
pub mod registry;
pub mod sbom;
pub mod signing;
pub mod source;
pub mod stack;
pub mod tool;
pub mod tree;
pub mod vulns;
