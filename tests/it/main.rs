//! Every integration test in one binary, so that a clean build links the
//! library and libtorch once instead of once per test file. Each module is
//! one area, run on real parts: the real FER-2013, a real MLflow server, a
//! real browser.

mod common;

mod cli;
mod compare_real;
mod data_bad_input;
mod data_real;
mod demo_real;
mod docs_check;
mod mlflow_real;
mod model_file_bad;
mod other_data;
mod predict_real;
mod quant_real;
mod report_real;
mod serve_real;
mod sweep_real;
mod train_real;
