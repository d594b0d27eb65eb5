//! What the people who run Transfer see: OpenTelemetry traces and metrics exported over
//! OTLP to a real (in-process) collector endpoint.

mod logs;
mod otlp_receiver;
mod traces_and_metrics;
