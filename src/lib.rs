//! `fer`: a research harness for facial emotion recognition on FER-2013.
//! The binary is a thin shell over this library.

pub mod artifact;
pub mod autocast;
pub mod bench;
pub mod calibrate;
pub mod cli;
pub mod combine;
pub mod config;
pub mod cpu;
pub mod data;
pub mod demo;
pub mod eval;
pub mod face;
pub mod layout;
pub mod lock;
pub mod metric;
pub mod mlflow;
pub mod models;
pub mod plot;
pub mod predict;
pub mod provenance;
pub mod quant;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod sweep;
pub mod tensor_io;
pub mod track;
pub mod train;
