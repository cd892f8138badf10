#!/usr/bin/env python3
"""Pull baseline: download S3 objects with parallel ranged GETs (boto3), discarding the bytes.

Usage: rangedget.py ENDPOINT BUCKET JOBS CHUNK_BYTES KEY...
Objects are fetched one after another (like a pull walks the layers), each with JOBS ranged
GETs of CHUNK_BYTES in flight. Prints the byte count on stdout. Credentials from AWS_* env.
"""

import sys
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config


def main():
    endpoint, bucket, jobs, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    keys = sys.argv[5:]
    s3 = boto3.client("s3", endpoint_url=endpoint,
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=jobs + 2,
                                    retries={"max_attempts": 3}))

    def get(key, start, end):
        body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")["Body"]
        n = 0
        while True:
            b = body.read(1 << 20)
            if not b:
                return n
            n += len(b)

    total = 0
    with ThreadPoolExecutor(jobs) as pool:
        for key in keys:
            size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
            futs = [pool.submit(get, key, s, min(s + chunk, size) - 1) for s in range(0, size, chunk)]
            got = sum(f.result() for f in futs)
            if got != size:
                raise SystemExit(f"{key}: got {got} of {size} bytes")
            total += got
    print(total)


if __name__ == "__main__":
    main()
