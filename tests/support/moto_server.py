# moto's S3 server with one fix: moto 5.2 names the root element of the CompleteMultipartUpload
# response `CompleteMultipartUploadResponse`; AWS (and every S3-compatible server) sends
# `CompleteMultipartUploadResult`, which the Rust SDK checks strictly. Nothing else is changed.
# The one copy: tests/support/s3_server.rs embeds it, bench/lib/replbench.py runs this file.
import sys
from moto.core import serialize
_orig = serialize.S3Serializer._serialized_result_to_response
def _fixed(self, resp, result, shape, serialized_result):
    resp = _orig(self, resp, result, shape, serialized_result)
    if self.operation_model.name == "CompleteMultipartUpload" and isinstance(resp.get("body"), str):
        resp["body"] = resp["body"].replace("CompleteMultipartUploadResponse", "CompleteMultipartUploadResult")
    return resp
serialize.S3Serializer._serialized_result_to_response = _fixed
from moto.server import main
main(sys.argv[1:])
