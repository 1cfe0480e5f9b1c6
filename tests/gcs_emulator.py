"""A Google Cloud Storage emulator on localhost for the gs:// tests: the `gcp-storage-emulator` package (a pure
Python GCS JSON API server), in memory, in a thread of the test process.

Every client under test talks HTTP to it, as it would to storage.googleapis.com:
  gcsfs (etils epath's gs:// backend)  STORAGE_EMULATOR_HOST
  tensorstore (Orbax's array writer)   TENSORSTORE_GCS_HTTP_URL, with GOOGLE_AUTH_TOKEN_FOR_TESTING standing in
                                       for credentials (tensorstore's own test hook; no real token exists here)
Subprocesses (the CLI, sweep trainers) inherit the variables from `env()`.

One gap of the emulator is filled here: its media downloads carry no `x-goog-generation` header, which the real
service always sends. tensorstore reads an object's generation from it and refuses a conditional write against
a missing one ("Malformed StorageGeneration"), so every download gets the header with the object's generation.
The emulator still ignores write preconditions (ifGenerationMatch): fine for one writer per object, which is
how the trainer writes.
"""

from __future__ import annotations

import contextlib

BUCKET = "vivit-test"


def _with_generation_header(download):
    def handler(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        if response.status.value in (200, 206):
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration") or 1)
    return handler


def _patch_downloads() -> None:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    if getattr(objects.download, "_vivit_patched", False):
        return
    original = objects.download
    patched = _with_generation_header(original)
    patched._vivit_patched = True
    objects.download = patched  # objects.get (?alt=media) looks it up at call time
    for _, methods in server.HANDLERS:  # the /download/... routes hold the function itself
        for verb, fn in list(methods.items()):
            if fn is original:
                methods[verb] = patched


@contextlib.contextmanager
def running():
    """Yields the emulator's base URL while it serves BUCKET (empty at start)."""
    import logging

    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    _patch_downloads()
    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        host, port = server._api._httpd.server_address[:2]  # port 0: the kernel picked a free one
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def env(url: str) -> dict[str, str]:
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        # gcsfs would otherwise ask the (absent) metadata server about hierarchical buckets and log a warning
        # per call
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }

