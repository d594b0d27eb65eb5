//! The Python client checks what it downloads: the lying server (`transfer_tests::
//! lying_server`) gets a non-zero exit and a message naming the problem, never a file.

use transfer_tests::TestFile;
use transfer_tests::lying_server::{LIES, start_lying_server};

use crate::python_client_at;

#[tokio::test]
async fn the_python_client_refuses_a_download_that_does_not_check_out() {
    let addr = start_lying_server(TestFile::new("lies.bin", 4500, 604)).await;
    for (lie, named) in LIES {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("lies.bin");
        let output = python_client_at(addr, &["download", lie, "-o", dest.to_str().unwrap()]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{lie}: {stderr}");
        assert!(stderr.contains(named), "{lie}: {stderr}");
        assert!(output.stdout.is_empty(), "{lie}: no JSON result");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{lie}: neither the file nor a partial one is left"
        );
    }
}
