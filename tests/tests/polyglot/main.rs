//! Transfer driven by peers in other languages and tools: grpcurl, and a Python client
//! generated from the proto. `scripts/test` installs them (TRANSFER_TEST_PYTHON,
//! TRANSFER_TEST_GRPCURL); without them these tests fail with a message saying so.
