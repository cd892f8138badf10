#!/usr/bin/env python3
"""Server-side copy of one S3 object the way s3dock moves a finished blob to its digest key:
CopyObject below 5 GiB, else a multipart upload of UploadPartCopy parts (512 MiB, 4 at a time, like
s3dock's -j 4). Deletes the copy.

  s3copy.py ENDPOINT BUCKET SRC_KEY DST_KEY
"""
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

PART = 512 << 20
endpoint, bucket, src, dst = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}, read_timeout=3600))
size = s3.head_object(Bucket=bucket, Key=src)["ContentLength"]
if size <= 5 << 30:
    s3.copy_object(Bucket=bucket, Key=dst, CopySource={"Bucket": bucket, "Key": src})
else:
    up = s3.create_multipart_upload(Bucket=bucket, Key=dst)["UploadId"]

    def part(n_start):
        n, start = n_start
        end = min(start + PART, size) - 1
        r = s3.upload_part_copy(Bucket=bucket, Key=dst, UploadId=up, PartNumber=n,
                                CopySource={"Bucket": bucket, "Key": src}, CopySourceRange=f"bytes={start}-{end}")
        return {"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]}

    with ThreadPoolExecutor(4) as ex:
        parts = list(ex.map(part, enumerate(range(0, size, PART), 1)))
    s3.complete_multipart_upload(Bucket=bucket, Key=dst, UploadId=up, MultipartUpload={"Parts": parts})
s3.delete_object(Bucket=bucket, Key=dst)
print(size)
