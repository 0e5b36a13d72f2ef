//! Test support shared by virtwire's integration tests. Use with `mod support;` at the top
//! of a test file. Each test binary uses only part of this, hence `allow(dead_code)`.
#![allow(dead_code)]

pub mod daemon;
pub mod guest;
pub mod reflect;
pub mod switch;
pub mod testpmd;
