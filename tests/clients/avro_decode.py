"""Decode Kafka messages in the Confluent wire format with fastavro, an Avro
implementation independent of Tributary's.

Reads JSON lines on stdin: {"payload": base64 of the message value}, with the
registry's schemas in the file named by argv[1] ({"id": schema text}).
Writes one JSON line per message: {"schema_id", "record"}; exits non-zero on
a message that is not magic byte 0 + a known schema id + a datum that
decodes to the end of the payload.
"""

import base64
import io
import json
import struct
import sys

import fastavro


def main() -> int:
    with open(sys.argv[1]) as f:
        schemas = {int(k): fastavro.parse_schema(json.loads(v)) for k, v in json.load(f).items()}
    for line in sys.stdin:
        payload = base64.b64decode(json.loads(line)["payload"])
        magic, schema_id = struct.unpack(">bI", payload[:5])
        if magic != 0:
            print(f"magic byte {magic}, expected 0", file=sys.stderr)
            return 1
        if schema_id not in schemas:
            print(f"schema id {schema_id} is not in the registry", file=sys.stderr)
            return 1
        body = io.BytesIO(payload[5:])
        record = fastavro.schemaless_reader(body, schemas[schema_id])
        if body.tell() != len(payload) - 5:
            print(f"{len(payload) - 5 - body.tell()} bytes left after the datum", file=sys.stderr)
            return 1
        print(json.dumps({"schema_id": schema_id, "record": record}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
