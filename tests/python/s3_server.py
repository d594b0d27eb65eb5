"""An S3-compatible server for the tests, alive as long as whoever started it.

    s3_server.py seaweedfs|moto [VOLUMES]

Starts SeaweedFS (`weed`) or moto (`moto_server`), installed beside this Python, on loopback, with
telemetry off, creates the bucket `transfer`, prints one line
`ready <endpoint> <access key> <secret key> <bucket>`, then waits for its standard input
to close (the test process ended, however it ended) and stops the server and deletes
its data. SeaweedFS gets VOLUMES volumes of 256 MB (default 32: 8 GB; it does not reclaim
deleted data at once, so a run that writes more, like the benchmark, asks for more).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import boto3

ACCESS_KEY, SECRET_KEY, BUCKET = "testkey", "testsecret", "transfer"


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def seaweedfs(bin_dir, data, volumes):
    master, volume, filer, s3, master_grpc, volume_grpc, filer_grpc, s3_grpc = free_ports(8)
    with open(os.path.join(data, "s3.json"), "w") as config:
        json.dump(
            {
                "identities": [
                    {
                        "name": "test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            },
            config,
        )
    command = [
        os.path.join(bin_dir, "weed"), "server",
        f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={data}/s3.json", f"-s3.localSocket={data}/s3.sock",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        # On by default, posting to an outside address.
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=256", f"-volume.max={volumes}",
    ]
    return command, f"http://127.0.0.1:{s3}"


def moto(bin_dir, _data, _volumes):
    (port,) = free_ports(1)
    return [os.path.join(bin_dir, "moto_server"), "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}"


def main():
    kind = sys.argv[1]
    volumes = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    bin_dir = os.path.dirname(sys.executable)
    data = tempfile.mkdtemp(prefix=f"transfer-test-{kind}-")
    command, endpoint = {"seaweedfs": seaweedfs, "moto": moto}[kind](bin_dir, data, volumes)
    log = open(os.path.join(data, "server.log"), "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                log.flush()
                sys.exit(f"{kind} exited with {server.returncode}: {open(log.name).read()[-2000:]}")
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception as error:  # not up yet
                if time.monotonic() > deadline:
                    sys.exit(f"{kind} did not answer at {endpoint} within 60 s: {error}")
                time.sleep(0.2)
        print(f"ready {endpoint} {ACCESS_KEY} {SECRET_KEY} {BUCKET}", flush=True)
        sys.stdin.read()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
