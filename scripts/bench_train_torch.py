"""The PyTorch side of `fer bench train`: the same models, batch, loss,
optimiser and augmentation as fer's defaults, timed the usual PyTorch way.

Modes: fp32 or bf16 (torch.autocast on CPU), with "-nhwc" for the
channels_last layout of model and input.

Prints one JSON object: {mode: {family: {"model_only": img/s, "end_to_end": img/s}}}.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image

import bench_torchvision as btv

SIZE = 44


class EmotionNet(nn.Module):
    def __init__(self, widths=(32, 64, 128, 256), convs=2, dropout=0.4):
        super().__init__()
        layers, cin = [], 1
        for w in widths:
            for _ in range(convs):
                layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(cin, 7)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.head(self.drop(x))


def mlp(hidden=(1024, 512), dropout=0.3):
    layers, d = [nn.Flatten()], SIZE * SIZE
    for h in hidden:
        layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
        d = h
    layers.append(nn.Linear(d, 7))
    return nn.Sequential(*layers)


def resnet18():
    m = torchvision.models.resnet18(num_classes=7)
    m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return m


class Block(nn.Module):
    def __init__(self, d, heads, hidden, p):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.heads, self.p = heads, p

    def attn(self, x):
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        y = self.proj(y.transpose(1, 2).reshape(b, t, d))
        return F.dropout(y, self.p, self.training)

    def mlp(self, x):
        x = F.dropout(F.gelu(self.fc1(x)), self.p, self.training)
        return F.dropout(self.fc2(x), self.p, self.training)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Vit(nn.Module):
    def __init__(self, patch=4, d=128, depth=4, heads=4, ratio=2.0, p=0.1):
        super().__init__()
        n = (SIZE // patch) ** 2
        self.patch_embed = nn.Conv2d(1, d, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, int(d * ratio), p) for _ in range(depth))
        self.norm, self.head, self.p = nn.LayerNorm(d), nn.Linear(d, 7), p

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], 1)
        t = F.dropout(t + self.pos_embed, self.p, self.training)
        for blk in self.blocks:
            t = blk(t)
        return self.head(self.norm(t)[:, 0])


FAMILIES = {
    "logistic": lambda: nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 7)),
    "mlp": mlp,
    "cnn": EmotionNet,
    "resnet18": resnet18,
    "vit": Vit,
}


def step_fn(model, mode):
    bf16, nhwc = mode.startswith("bf16"), mode.endswith("-nhwc")
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}],
                          lr=0.01, momentum=0.9, nesterov=True)

    def step(x, y):
        if nhwc and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--modes", default="fp32")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    need = a.batch_size * (a.warmup + a.batches + 1)
    files = sorted(__import__("glob").glob(os.path.join(a.data, "train", "*", "*.jpg")))[:need]
    x_all = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("L")) for f in files])).unsqueeze(1)
    y_all = torch.randint(0, 7, (len(files),))
    bs, out = a.batch_size, {}
    for fam, mode in ((f, m) for f in a.families.split(",") for m in a.modes.split(",")):
        torch.manual_seed(0)
        model = FAMILIES[fam]().train()
        step = step_fn(model, mode)
        # Model only: one fixed, already-normalised batch.
        xb = torch.randn(bs, 1, SIZE, SIZE)
        yb = torch.randint(0, 7, (bs,))
        for _ in range(a.warmup):
            step(xb, yb)
        t = time.perf_counter()
        for _ in range(a.batches):
            step(xb, yb)
        model_only = a.batches * bs / (time.perf_counter() - t)
        # End to end: a DataLoader with torchvision augmentation, as usual.
        dl = torch.utils.data.DataLoader(btv.Faces(x_all, y_all, btv.train_tf()), batch_size=bs,
                                         shuffle=True, num_workers=a.workers, drop_last=True,
                                         persistent_workers=a.workers > 0)
        it = iter(dl)
        for _ in range(a.warmup):
            step(*next(it))
        t = time.perf_counter()
        for _ in range(a.batches):
            step(*next(it))
        e2e = a.batches * bs / (time.perf_counter() - t)
        del it, dl
        out.setdefault(mode, {})[fam] = {"model_only": model_only, "end_to_end": e2e,
                    "params": sum(p.numel() for p in model.parameters())}
    out["versions"] = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
