"""A TRAK featurisation on a two-worker Dask cluster as its own process, for the
whole-job kill test (test_distributed.py); ``DEEPPROFILE_TEST_KILL_AT=trak-chunk-committed``
kills the process when the first chunk is committed.

Usage: python kill_trak_worker.py CHECKPOINT_DIR STORE_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch


def main(checkpoints: str, store_dir: str) -> None:
    from dask import distributed

    from deepprofile.data_attribution.distributed import featurize_distributed
    from deepprofile.data_attribution.store import FeatureStore
    from deepprofile.data_attribution.trak import TrakEnsemble, checkpoint_infos

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("da_conftest",
                                                  Path(__file__).with_name("conftest.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    ens = TrakEnsemble(conf.TinyMLP().eval(),
                       checkpoint_infos(sorted(Path(checkpoints).glob("epoch_*.pt"))),
                       conf.blobs(120, 0), FeatureStore(Path(store_dir) / "data_attribution.zarr"),
                       proj_dim=20, batch_size=16, chunk_size=20, quiet=True)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        featurize_distributed(ens, client)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
