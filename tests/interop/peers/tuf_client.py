#!/usr/bin/env python3
"""An independent TUF client (python-tuf's ngclient) for the interop tests:
refreshes the repository's metadata from a trusted root and downloads and
verifies one target.

  tuf_client.py --root ROOT.json --metadata-url URL/ --targets-url URL/ \
                --target NAME --out DIR [--metadata-dir DIR]

Exits 0 and prints the target's path on success; non-zero with the error
otherwise. HTTPS trust comes from SSL_CERT_FILE (urllib3) or REQUESTS_CA_BUNDLE.
"""
import argparse
import os
import shutil
import sys
import tempfile

from tuf.ngclient import Updater


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--metadata-url", required=True)
    p.add_argument("--targets-url", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--metadata-dir", help="keep the trusted metadata here between runs")
    a = p.parse_args()
    meta = a.metadata_dir or tempfile.mkdtemp()
    os.makedirs(meta, exist_ok=True)
    local_root = os.path.join(meta, "root.json")
    root_file = local_root if os.path.exists(local_root) else a.root
    with open(root_file, "rb") as f:
        trusted_root = f.read()
    os.makedirs(a.out, exist_ok=True)
    try:
        kwargs = dict(metadata_dir=meta, metadata_base_url=a.metadata_url,
                      target_base_url=a.targets_url, target_dir=a.out)
        try:  # python-tuf >= 6 takes the trusted root as `bootstrap`
            u = Updater(bootstrap=trusted_root, **kwargs)
        except TypeError:
            if root_file != local_root:
                shutil.copy(a.root, local_root)
            u = Updater(**kwargs)
        u.refresh()
        info = u.get_targetinfo(a.target)
        if info is None:
            print(f"no target {a.target}", file=sys.stderr)
            return 3
        path = u.download_target(info)
        print(path)
        print("custom:", info.custom)
        return 0
    except Exception as e:  # noqa: BLE001 - report whatever the client refused
        import traceback
        traceback.print_exc()
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
