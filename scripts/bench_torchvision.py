"""The PyTorch side of `fer bench data`: the same work done the usual way.

Prints one JSON object. Run by `fer bench data` from the project's .venv.
"""
import argparse
import glob
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

MEAN, STD = 0.5077, 0.2550


def train_tf():
    # Mirrors fer's default AugmentConfig.
    return v2.Compose([
        v2.RandomCrop(44, padding=2, padding_mode="reflect"),
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(10, interpolation=v2.InterpolationMode.BILINEAR),
        v2.ColorJitter(brightness=0.2, contrast=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([MEAN], [STD]),
        v2.RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3)),
    ])


def eval_tf():
    return v2.Compose([
        v2.CenterCrop(44),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([MEAN], [STD]),
    ])


class Faces(Dataset):
    def __init__(self, x, labels, tf):
        self.x, self.labels, self.tf = x, labels, tf

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.tf(self.x[i]), self.labels[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(glob.glob(os.path.join(a.data, "*", "*", "*.jpg")))

    decode = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        arr = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
        decode.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "faces.npy")
        np.save(p, arr)
        loads = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            np.load(p)
            loads.append(time.perf_counter() - t)

    n = min(a.images, len(arr))
    x = torch.from_numpy(arr[:n]).unsqueeze(1).contiguous()  # uint8 [N,1,48,48]
    labels = torch.zeros(n, dtype=torch.long)

    tf = train_tf()
    rates = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        for i in range(n):
            tf(x[i])
        rates.append(n / (time.perf_counter() - t))
    aug1 = statistics.median(rates)

    def loader_rate(transform):
        dl = DataLoader(Faces(x, labels, transform), batch_size=64, shuffle=True,
                        num_workers=a.workers, persistent_workers=False)
        rs = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            for _batch in dl:
                pass
            rs.append(n / (time.perf_counter() - t))
        return statistics.median(rs)

    print(json.dumps({
        "versions": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        "files": len(files),
        "decode_seconds": statistics.median(decode),
        "npy_load_seconds": statistics.median(loads),
        "aug_1_thread": aug1,
        "aug_workers": loader_rate(train_tf()),
        "eval_workers": loader_rate(eval_tf()),
    }))


if __name__ == "__main__":
    main()
