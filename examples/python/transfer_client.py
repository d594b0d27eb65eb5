#!/usr/bin/env python3
"""A small Transfer client in Python, generated from the proto at run time.

    python transfer_client.py --server 127.0.0.1:50051 upload FILE [--window N]
        [--chunk-size N] [--break-after N]
    python transfer_client.py --server 127.0.0.1:50051 download FILE_ID -o PATH

Each command prints one JSON object on standard output and exits 0, or says what went
wrong on standard error and exits 1 (2 for usage errors).

The gRPC stubs are not committed: they are generated from ../../proto with grpcio-tools
into a temporary directory every time this runs. See README.md next to this file.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.resources
import json
import os
import queue
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Iterator

import google_crc32c
import grpc

DEFAULT_PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
PROTO_FILE = "transfer/v1/transfer.proto"
# How often one chunk may come back BAD_CHECKSUM before the upload gives up.
MAX_CHECKSUM_RETRIES = 3


class TransferFailed(Exception):
    """A transfer failed; the message says why, for people."""


# --- Code generation -------------------------------------------------------------------


def generate_stubs(proto_dir: Path, out_dir: Path) -> tuple[ModuleType, ModuleType]:
    """Runs grpc_tools.protoc on the proto and imports the generated modules."""
    from grpc_tools import protoc

    if not (proto_dir / PROTO_FILE).is_file():
        raise TransferFailed(f"no {PROTO_FILE} under {proto_dir} (set --proto-dir)")
    # google/protobuf/timestamp.proto and friends ship with grpcio-tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            PROTO_FILE,
        ]
    )
    if status != 0:
        raise TransferFailed(f"grpc_tools.protoc failed on {proto_dir / PROTO_FILE}")
    sys.path.insert(0, str(out_dir))
    pb2 = importlib.import_module("transfer.v1.transfer_pb2")
    pb2_grpc = importlib.import_module("transfer.v1.transfer_pb2_grpc")
    return pb2, pb2_grpc


# --- Helpers ---------------------------------------------------------------------------


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def file_md5(path: Path) -> bytes:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.digest()


def committed_count(session) -> int:
    return sum(r.end - r.start for r in session.committed)


def missing_chunks(session) -> list[int]:
    """Chunk indexes the session does not have yet, in order."""
    missing, next_index = [], 0
    for r in session.committed:
        missing.extend(range(next_index, r.start))
        next_index = max(next_index, r.end)
    missing.extend(range(next_index, session.chunk_count))
    return missing


def file_json(pb2: ModuleType, info) -> dict:
    return {
        "file_id": info.file_id,
        "name": info.name,
        "size": info.size,
        "md5": info.md5.hex(),
        "state": pb2.FileState.Name(info.state),
    }


class RequestQueue:
    """The request side of a bidirectional stream: grpcio reads it on its own thread."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()

    def put(self, message) -> None:
        self._queue.put(message)

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator:
        while (message := self._queue.get()) is not self._END:
            yield message


# --- Upload ----------------------------------------------------------------------------


@dataclass
class StreamOutcome:
    """How one UploadChunks stream ended: completed, or deliberately broken."""

    file: object | None = None
    chunks_sent: int = 0
    broken: bool = False


@dataclass
class Uploader:
    pb2: ModuleType
    stub: object
    path: Path
    window: int
    chunk_size: int
    break_after: int | None
    metadata: tuple = ()
    _retries: dict[int, int] = field(default_factory=dict)

    def check(self, size: int, md5: bytes):
        request = self.pb2.CheckUploadRequest(
            name=self.path.name,
            size=size,
            md5=md5,
            preferred_chunk_size=self.chunk_size,
        )
        return self.stub.CheckUpload(request, metadata=self.metadata)

    def run(self) -> dict:
        size = self.path.stat().st_size
        md5 = file_md5(self.path)
        answer = self.check(size, md5)
        chunks_sent = breaks = skipped = 0
        while answer.WhichOneof("result") == "session":
            session = answer.session
            skipped = committed_count(session)
            if session.resumed:
                say(f"resuming upload {session.upload_id}: {skipped} of "
                    f"{session.chunk_count} chunks already committed, not sent again")
            # Break only the first stream: the resumed one runs to the end.
            break_after = self.break_after if breaks == 0 else None
            outcome = self.stream(session, break_after)
            chunks_sent += outcome.chunks_sent
            if not outcome.broken:
                return self.result(outcome.file, instant=False, chunks_sent=chunks_sent,
                                   skipped=skipped, breaks=breaks)
            breaks += 1
            say(f"stream broken on purpose after {break_after} acks; asking CheckUpload again")
            answer = self.check(size, md5)
        return self.result(answer.already_stored, instant=(breaks == 0 and chunks_sent == 0),
                           chunks_sent=chunks_sent, skipped=skipped, breaks=breaks)

    def result(self, info, *, instant: bool, chunks_sent: int, skipped: int, breaks: int) -> dict:
        return {
            **file_json(self.pb2, info),
            "status": "already_stored" if instant else "completed",
            "instant": instant,
            "chunks_sent": chunks_sent,
            "resumed_skipped": skipped,
            "breaks": breaks,
        }

    def read_chunk(self, f, session, index: int):
        offset = index * session.chunk_size
        f.seek(offset)
        data = f.read(session.chunk_size)
        return self.pb2.UploadChunksRequest(
            chunk=self.pb2.Chunk(index=index, data=data, crc32c=crc32c(data))
        )

    def stream(self, session, break_after: int | None) -> StreamOutcome:
        """Sends the session's missing chunks over one UploadChunks stream, keeping at most
        min(window, max_window) unacknowledged, until `completed` (or the deliberate break)."""
        window = max(1, min(self.window, session.max_window))
        pending = missing_chunks(session)
        pending.reverse()  # pop() from the end sends them in order
        requests = RequestQueue()
        requests.put(self.pb2.UploadChunksRequest(
            start=self.pb2.UploadStart(upload_id=session.upload_id)))
        call = self.stub.UploadChunks(iter(requests), metadata=self.metadata)
        outcome = StreamOutcome()
        in_flight = acks = 0
        try:
            with self.path.open("rb") as f:

                def fill() -> None:
                    nonlocal in_flight
                    while pending and in_flight < window:
                        requests.put(self.read_chunk(f, session, pending.pop()))
                        in_flight += 1
                        outcome.chunks_sent += 1

                fill()
                for response in call:
                    if response.WhichOneof("message") == "completed":
                        outcome.file = response.completed.file
                        return outcome
                    in_flight -= 1
                    acks += 1
                    self.handle_ack(response.ack, pending)
                    if break_after is not None and acks >= break_after:
                        outcome.broken = True  # the `finally` below cancels the call
                        return outcome
                    fill()
            raise TransferFailed("the server ended UploadChunks without `completed`")
        finally:
            requests.close()
            call.cancel()  # nothing to cancel once the server ended the stream

    def handle_ack(self, ack, pending: list[int]) -> None:
        outcome = ack.outcome
        if outcome in (self.pb2.CHUNK_OUTCOME_STORED, self.pb2.CHUNK_OUTCOME_ALREADY_STORED):
            return
        name = self.pb2.ChunkOutcome.Name(outcome)
        if outcome == self.pb2.CHUNK_OUTCOME_BAD_CHECKSUM:
            tries = self._retries.get(ack.index, 0) + 1
            if tries <= MAX_CHECKSUM_RETRIES:
                self._retries[ack.index] = tries
                say(f"chunk {ack.index}: {name} ({ack.detail}); sending it again")
                pending.append(ack.index)
                return
        raise TransferFailed(f"chunk {ack.index} rejected: {name}: {ack.detail}")


# --- Download --------------------------------------------------------------------------


def download(pb2: ModuleType, stub, file_id: str, out: Path, metadata: tuple) -> dict:
    """Downloads a whole file into `out`, checking each piece's offset and CRC32C and the
    whole file's MD5 and size. Writes `out.part` first: `out` appears only if all is well."""
    responses = stub.Download(pb2.DownloadRequest(file_id=file_id), metadata=metadata)
    first = next(responses, None)
    if first is None or first.WhichOneof("message") != "file":
        raise TransferFailed("Download did not start with the file's metadata")
    info = first.file
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f"{out.name}.part")
    try:
        digest = hashlib.md5()
        offset = 0
        with part.open("wb") as f:
            for response in responses:
                if response.WhichOneof("message") != "piece":
                    raise TransferFailed("Download sent a second `file` after the metadata")
                piece = response.piece
                if piece.offset != offset:
                    raise TransferFailed(f"a piece at offset {piece.offset}, expected {offset}")
                if crc32c(piece.data) != piece.crc32c:
                    raise TransferFailed(
                        f"piece at offset {offset}: CRC32C {crc32c(piece.data):08x} "
                        f"of the data, {piece.crc32c:08x} sent")
                f.write(piece.data)
                digest.update(piece.data)
                offset += len(piece.data)
        if offset != info.size:
            raise TransferFailed(f"received {offset} bytes, the file has {info.size}")
        if digest.digest() != info.md5:
            raise TransferFailed(f"MD5 {digest.hexdigest()} of the bytes received, "
                                 f"{info.md5.hex()} in the metadata")
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return {**file_json(pb2, info), "status": "completed", "path": str(out)}


# --- Command line ----------------------------------------------------------------------


def say(message: str) -> None:
    print(f"transfer_client: {message}", file=sys.stderr)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Upload and download files with a Transfer server (Python, grpcio).")
    parser.add_argument("--server", default="127.0.0.1:50051",
                        help="HOST:PORT of the server (default %(default)s)")
    parser.add_argument("--owner", help="act for this owner (sent as x-transfer-owner)")
    parser.add_argument("--token", default=os.environ.get("TRANSFER_TOKEN"),
                        help="API key, sent as `authorization: Bearer` (default: $TRANSFER_TOKEN)")
    parser.add_argument("--tls", action="store_true",
                        help="connect over TLS (implied by --ca-cert and --client-cert)")
    parser.add_argument("--ca-cert", type=Path,
                        help="PEM CA certificate of the server's certificate (default: system roots)")
    parser.add_argument("--client-cert", type=Path, help="PEM client certificate")
    parser.add_argument("--client-key", type=Path, help="PEM key of --client-cert")
    parser.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR,
                        help="the proto/ directory to generate code from (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("upload", help="upload a file (resumes an earlier upload of it)")
    up.add_argument("file", type=Path)
    up.add_argument("--window", type=positive, default=8,
                    help="most unacknowledged chunks (capped by the server's max_window)")
    up.add_argument("--chunk-size", type=int, default=0,
                    help="preferred chunk size in bytes; 0 for the server's default")
    up.add_argument("--break-after", type=positive, metavar="N",
                    help="cancel the stream after N acks, then resume with CheckUpload")

    down = commands.add_parser("download", help="download a file by id")
    down.add_argument("file_id")
    down.add_argument("-o", "--output", type=Path, required=True, help="where to write it")
    args = parser.parse_args(argv)
    if "://" in args.server:
        parser.error(f"--server takes HOST:PORT, not a URL: {args.server}")
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key go together")
    args.tls = args.tls or args.ca_cert is not None or args.client_cert is not None
    host = args.server.rsplit(":", 1)[0].strip("[]")
    if args.token and not args.tls and host not in ("127.0.0.1", "::1", "localhost"):
        parser.error(f"refusing to send an API key in cleartext to {host}: add --tls")
    return args


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A plaintext channel, or a TLS one checked against --ca-cert (or the system's roots)."""
    if not args.tls:
        return grpc.insecure_channel(args.server)
    read = lambda path: path.read_bytes() if path is not None else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca_cert),
        private_key=read(args.client_key),
        certificate_chain=read(args.client_cert),
    )
    return grpc.secure_channel(args.server, credentials)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    metadata = (("x-transfer-owner", args.owner),) if args.owner else ()
    if args.token:
        metadata += (("authorization", f"Bearer {args.token}"),)
    try:
        with tempfile.TemporaryDirectory(prefix="transfer-stubs-") as generated:
            pb2, pb2_grpc = generate_stubs(args.proto_dir, Path(generated))
        with open_channel(args) as channel:
            stub = pb2_grpc.TransferServiceStub(channel)
            if args.command == "upload":
                result = Uploader(pb2, stub, args.file, args.window, args.chunk_size,
                                  args.break_after, metadata).run()
            else:
                result = download(pb2, stub, args.file_id, args.output, metadata)
    except grpc.RpcError as error:
        say(f"{args.command} failed: {error.code().name}: {error.details()}")
        return 1
    except (TransferFailed, OSError) as error:
        say(f"{args.command} failed: {error}")
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
