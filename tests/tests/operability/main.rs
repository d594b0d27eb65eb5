//! What the people who run Transfer see: OpenTelemetry traces and metrics exported over
//! OTLP to a real (in-process) collector endpoint; logs; how transferd stops on SIGTERM.

mod data_dir;
mod full_disk;
mod logs;
mod otlp_receiver;
mod shutdown;
mod traces_and_metrics;
