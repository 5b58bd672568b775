"""A project folder as ``cryoset view`` sees it: its steps, their files, and every write-back.

The folder is recognised by the ``provenance.json`` each step writes: a sub-folder whose
record says ``"command": "pick"`` is the picks, ``"classify2d"`` the 2D classes, ``"ctf"`` the
CTF fits (``cryoset demo`` and ``cryoset build`` lay them out as ``picks/``, ``classes/``,
``ctf/``). Every write goes through the command line's own workflow functions or writers:

* a pick added or removed by hand rewrites the micrograph's coordinate file (the format
  ``pick`` wrote, atomically) and its row of ``picks_scores.parquet``;
* *apply* re-inspects every candidate pick with new thresholds by calling
  :func:`cryoset.workflows.pick.run_pick` with ``method="import"`` on the candidates (the
  project's scored picks, hand edits included): the files are those ``cryoset pick --method
  import --import-dir CANDIDATES --min-ncc … --out picks`` writes;
* a class selection rewrites ``particles.star`` (``rlnCryosetKept``), ``particles_kept.star``
  and ``particles_selected.csv`` with the writers :mod:`cryoset.workflows.classify2d` uses
  (classes kept, and per class of origin whether its recovered particles are kept), and for a
  ``classify2d --store`` run the store's kept flags
  (:meth:`cryoset.store.ParticleStore.write_selection`, the ``selection`` view).

Each write is recorded (user, UTC time, action, parameters) in ``.cryoset-view/log.jsonl``
and, for classes, in ``class_selection.json`` with a provenance record. The rendered images
are cached in ``.cryoset-view/cache``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryoset.errors import InputError

__all__ = ["CACHE_DIR", "CLASS_SELECTION", "Conflict", "Project", "RequestError", "open_project"]

#: The folder (inside the project) of the app's cache and decision log.
CACHE_DIR = ".cryoset-view"
#: The record of the last class selection, in the classes folder.
CLASS_SELECTION = "class_selection.json"
#: The ``--pixel-size-a`` of the project's ``pick`` (non-MRC micrographs), kept by the first apply.
PIXEL_SIZE_FILE = "pick_pixel_size_a.json"
#: Longest side of a rendered micrograph, pixels (the server bins down to it).
MAX_RENDER_PX = 1024


class RequestError(ValueError):
    """A bad request (HTTP 400): one line saying what is wrong."""


class Conflict(RuntimeError):
    """A write based on a stale version (HTTP 409)."""


def _version(path: Path) -> str:
    """A short content hash of a file ("" when it does not exist): the edit version."""
    if not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _number(body: dict[str, Any], name: str, *, required: bool = True) -> float | None:
    if name not in body or body[name] is None:
        if required:
            raise RequestError(f"'{name}' is required")
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"'{name}' must be a finite number, got {value!r}")
    return float(value)


@dataclass
class Project:
    """The steps found in a project folder and the app's state over them."""

    root: Path
    picks_dir: Path | None = None
    classes_dir: Path | None = None
    ctf_dir: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ discovery
    @property
    def cache(self) -> Path:
        return self.root / CACHE_DIR / "cache"

    def pick_record(self) -> dict[str, Any]:
        if self.picks_dir is None:
            raise RequestError("this project has no picks (no folder whose provenance.json says 'pick')")
        record: dict[str, Any] = json.loads((self.picks_dir / "provenance.json").read_text())
        return record

    def micrograph_paths(self) -> list[Path]:
        """The micrographs ``pick`` read (its provenance inputs), in order."""
        from cryoset.workflows.pick import micrograph_key

        record = self.pick_record()
        skip = {str(record["parameters"].get(k)) for k in ("templates", "checkpoint") if record["parameters"].get(k)}
        paths = []
        for item in record.get("inputs", []):
            p = Path(item["path"])
            if str(p) in skip or p.suffix.lower() == ".star" or p.is_dir():
                continue
            if p.name.endswith(".safetensors") or p.suffix.lower() == ".mrcs":  # templates, a checkpoint
                continue
            paths.append(p)
        keys = [micrograph_key(p.name) for p in paths]
        if len(set(keys)) != len(keys):
            raise InputError(self.picks_dir or self.root, "its provenance names two micrographs with one name")
        return paths

    def micrograph(self, key: str) -> Path:
        from cryoset.workflows.pick import micrograph_key

        for p in self.micrograph_paths():
            if micrograph_key(p.name) == key:
                return p
        raise RequestError(f"no micrograph {key!r} in this project")

    def coord_file(self, key: str) -> Path:
        from cryoset.workflows.pick import SUFFIXES

        assert self.picks_dir is not None
        fmt = str(self.pick_record()["parameters"].get("format") or "star")
        return self.picks_dir / (key + SUFFIXES[fmt])

    # ------------------------------------------------------------------ micrographs
    def ctf_table(self) -> Any:
        """``ctf.csv`` of the CTF step keyed by micrograph key (None without one)."""
        import pandas as pd

        from cryoset.workflows.pick import micrograph_key

        if self.ctf_dir is None or not (self.ctf_dir / "ctf.csv").is_file():
            return None
        t = pd.read_csv(self.ctf_dir / "ctf.csv")
        t.index = [micrograph_key(str(m)) for m in t["micrograph"]]
        return t

    def scores(self) -> Any:
        """Every scored pick (``picks_scores.parquet``), micrograph keys in ``key``."""
        import pandas as pd

        from cryoset.workflows.pick import SCORES_FILE, micrograph_key

        assert self.picks_dir is not None
        path = self.picks_dir / SCORES_FILE
        if not path.is_file():
            raise InputError(path, "is missing: run cryoset pick (it writes every scored pick there)")
        t = pd.read_parquet(path)
        t["key"] = [micrograph_key(str(m)) for m in t["micrograph"]]
        return t

    def micrographs(self) -> list[dict[str, Any]]:
        from cryoset.workflows.pick import micrograph_key

        ctf = self.ctf_table()
        scores = self.scores()
        out = []
        for p in self.micrograph_paths():
            key = micrograph_key(p.name)
            mine = scores[scores["key"] == key]
            row: dict[str, Any] = {"key": key, "name": p.name, "picks": int((mine["Reason"] == "").sum()),
                                   "rejected": int((mine["Reason"] != "").sum()),
                                   "fit_resolution_a": None, "defocus_a": None, "ctf_plot": False}
            if ctf is not None and key in ctf.index:
                c = ctf.loc[key]
                row["fit_resolution_a"] = _finite(c.get("fit_resolution_a"))
                du, dv = _finite(c.get("defocus_u_a")), _finite(c.get("defocus_v_a"))
                row["defocus_a"] = None if du is None or dv is None else (du + dv) / 2
                row["ctf_plot"] = self.ctf_plot(key) is not None
            out.append(row)
        return out

    def ctf_plot(self, key: str) -> Path | None:
        if self.ctf_dir is None:
            return None
        p = self.ctf_dir / "plots" / f"{key}_ctf.png"
        return p if p.is_file() else None

    def picks(self, key: str) -> dict[str, Any]:
        """The picks of one micrograph (accepted and rejected with reason) and its edit version."""
        self.micrograph(key)
        scores = self.scores()
        mine = scores[scores["key"] == key]
        record = self.pick_record()["parameters"]
        diameter_px = (float(mine["diameter_px"].iloc[0]) if len(mine) and "diameter_px" in mine
                       else None)
        rows = [{"x_px": float(r.x_px), "y_px": float(r.y_px), "ncc": _finite(r.ncc), "power": _finite(r.power),
                 "reason": str(r.Reason)} for r in mine.itertuples()]
        return {"key": key, "picks": rows, "diameter_px": diameter_px,
                "diameter_a": record.get("diameter_a"), "version": _version(self.coord_file(key))}

    def render(self, key: str, contrast: float, lowpass_a: float) -> Path:
        """A PNG of the micrograph: low-passed, binned to ≤ :data:`MAX_RENDER_PX`, clipped at
        ``contrast`` standard deviations (cached)."""
        import numpy as np

        from cryoset.io.atomic import write_bytes_atomic
        from cryoset.io.images import read_image

        if not (0.2 <= contrast <= 20):
            raise RequestError(f"contrast must be between 0.2 and 20 standard deviations, got {contrast}")
        if not (0 <= lowpass_a <= 1000):
            raise RequestError(f"low-pass must be between 0 and 1000 Å, got {lowpass_a}")
        path = self.micrograph(key)
        stat = path.stat()
        tag = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        png = self.cache / f"{key}_{tag}_c{contrast:g}_lp{lowpass_a:g}.png"
        if png.is_file():
            return png
        binned = self.cache / f"{key}_{tag}_lp{lowpass_a:g}.npy"
        if binned.is_file():
            small = np.load(binned, allow_pickle=False)
        else:
            small = _binned(read_image(path, pixel_size_a=self._pixel_size(path)), lowpass_a)
            self.cache.mkdir(parents=True, exist_ok=True)
            import io

            buf = io.BytesIO()
            np.save(buf, small, allow_pickle=False)
            write_bytes_atomic(binned, buf.getvalue())
        mean, sd = float(small.mean()), float(small.std()) or 1.0
        lo, hi = mean - contrast * sd, mean + contrast * sd
        u8 = (np.clip((small - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
        import io as _io

        from PIL import Image

        buf2 = _io.BytesIO()
        Image.fromarray(u8).save(buf2, format="PNG", compress_level=1)
        self.cache.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(png, buf2.getvalue())
        return png

    def pick_pixel_size_a(self) -> float | None:
        """The ``--pixel-size-a`` ``pick`` was given (its command line in the provenance), or None
        (MRC micrographs: their header's)."""
        record = self.pick_record()
        if record["parameters"].get("pixel_size_a"):
            return float(record["parameters"]["pixel_size_a"])
        kept = self.root / CACHE_DIR / PIXEL_SIZE_FILE  # what the first apply found (its record lacks it)
        if kept.is_file():
            return float(json.loads(kept.read_text())["pixel_size_a"])
        argv = [str(a) for a in record.get("command_line") or []]
        if record.get("command") != "pick" or "pick" not in argv:
            return None
        for i, arg in enumerate(argv):
            value = (argv[i + 1] if arg == "--pixel-size-a" and i + 1 < len(argv)
                     else arg.partition("=")[2] if arg.startswith("--pixel-size-a=") else None)
            if value is not None:
                try:
                    return float(value)
                except ValueError:
                    return None
        return None

    def _pixel_size(self, path: Path) -> float | None:
        px = self.pick_pixel_size_a()
        if px is None and path.suffix.lower() not in (".mrc", ".mrcs", ".map"):
            raise InputError(path, "has no pixel size in its header and the pick record does not give "
                             "--pixel-size-a: the view needs MRC micrographs or a pick run with it")
        return px

    def render_scale(self, key: str) -> dict[str, Any]:
        """Shape of the micrograph and of its rendering (the bin factor)."""
        from cryoset.io.images import read_image
        from cryoset.io.mrc import read_header

        path = self.micrograph(key)
        if path.suffix.lower() in (".mrc", ".mrcs", ".map"):
            ny, nx = (int(v) for v in read_header(path, permissive=True)["shape_zyx"][1:])
        else:
            ny, nx = read_image(path, pixel_size_a=1.0, permissive=True).data.shape
        b = bin_factor(ny, nx)
        return {"ny": ny, "nx": nx, "bin": b}

    # ------------------------------------------------------------------ pick edits
    def edit_pick(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        """Add (``action`` "add") or remove (``"remove"``, the nearest within a radius) one pick.

        ``version`` must be that of the coordinate file the client saw, else :class:`Conflict`.
        """
        from cryoset.io.atomic import atomic_path
        from cryoset.io.coords import read_coords, write_coords
        from cryoset.workflows.pick import SCORES_FILE

        action = body.get("action")
        if action not in ("add", "remove"):
            raise RequestError(f"'action' must be 'add' or 'remove', got {action!r}")
        x, y = _number(body, "x_px"), _number(body, "y_px")
        assert x is not None and y is not None
        version = body.get("version")
        if not isinstance(version, str):
            raise RequestError("'version' (the version of the picks you edited) is required")
        mic = self.micrograph(key)
        shape = self.render_scale(key)
        if not (0 <= x < shape["nx"] and 0 <= y < shape["ny"]):
            raise RequestError(f"({x:g}, {y:g}) is outside the micrograph ({shape['nx']}×{shape['ny']} px)")
        with self.lock:
            coord = self.coord_file(key)
            current = _version(coord)
            if current != version:
                raise Conflict(f"the picks of {key} changed since you loaded them (another tab or "
                               "process saved them): reload to see the saved picks, then edit again")
            scores = self.scores()
            mine = scores["key"] == key
            diameter = float(scores.loc[mine, "diameter_px"].iloc[0]) if mine.any() else float("nan")
            if not math.isfinite(diameter):
                diameter = float(self.pick_record()["parameters"]["diameter_a"]) / self._mic_pixel_size(mic)
            accepted = read_coords(coord, micrograph_shape=(shape["ny"], shape["nx"])) if coord.is_file() else None
            if action == "add":
                new = {"micrograph": mic.name, "x_px": x, "y_px": y, "score": float("nan"),
                       "diameter_px": diameter, "ncc": float("nan"), "power": float("nan"), "Reason": ""}
                import pandas as pd

                scores = pd.concat([scores, pd.DataFrame([{**new, "key": key}])], ignore_index=True)
                row = pd.DataFrame([{"micrograph": mic.name, "x_px": x, "y_px": y, "score": float("nan")}])
                accepted = row if accepted is None or accepted.empty else pd.concat([accepted, row], ignore_index=True)
                done = {"x_px": x, "y_px": y}
            else:
                d = ((scores["x_px"] - x) ** 2 + (scores["y_px"] - y) ** 2) ** 0.5
                d = d.where(mine, float("inf"))
                if d.empty or not float(d.min()) <= diameter / 2:
                    raise RequestError(f"no pick within {diameter / 2:.0f} px of ({x:.0f}, {y:.0f})")
                i = int(d.idxmin())
                px, py = float(scores.at[i, "x_px"]), float(scores.at[i, "y_px"])
                scores = scores.drop(index=i).reset_index(drop=True)
                if accepted is not None and len(accepted):
                    keep = ~((accepted["x_px"] - px).abs().lt(1e-3) & (accepted["y_px"] - py).abs().lt(1e-3))
                    accepted = accepted[keep].reset_index(drop=True)
                done = {"x_px": px, "y_px": py}
            import pandas as pd

            if accepted is None:
                accepted = pd.DataFrame({"micrograph": pd.Series(dtype=str), "x_px": pd.Series(dtype=float),
                                         "y_px": pd.Series(dtype=float)})
            accepted["micrograph"] = mic.name
            assert self.picks_dir is not None
            with atomic_path(self.picks_dir / SCORES_FILE) as tmp:
                scores.drop(columns=["key"]).to_parquet(tmp, index=False)
            write_coords(coord, accepted, micrograph_shape=(shape["ny"], shape["nx"]),
                         provenance=self._provenance("view pick edit", {"action": action, **done}, [mic]))
            self.log("pick " + action, {"micrograph": key, **done})
        return self.picks(key)

    def _mic_pixel_size(self, path: Path) -> float:
        from cryoset.io.images import read_image

        px = self._pixel_size(path)
        if px is not None:
            return px
        img = read_image(path)
        return float(img.pixel_size_a or 1.0)

    # ------------------------------------------------------------------ inspection
    def inspection(self) -> dict[str, Any]:
        """Every scored pick's NCC and power (rejections other than thresholds flagged) and the
        thresholds in force."""
        scores = self.scores()
        params = self.pick_record()["parameters"]
        fixed = [bool(r) and not (r.startswith("NCC ") or r.startswith("power ")) for r in scores["Reason"]]
        return {
            "key": list(scores["key"]),
            "x_px": [float(v) for v in scores["x_px"]],
            "y_px": [float(v) for v in scores["y_px"]],
            "ncc": [_finite(v) for v in scores["ncc"]],
            "power": [_finite(v) for v in scores["power"]],
            "fixed_reason": [str(r) if f else "" for r, f in zip(scores["Reason"], fixed, strict=True)],
            "histograms": {name: histogram(scores[name]) for name in ("ncc", "power")},
            "thresholds": {k: params.get(k) for k in ("min_ncc", "min_power", "max_power", "max_ctf_resolution_a")},
        }

    def candidates(self, folder: Path) -> Path:
        """Write every candidate pick (scored picks, hand edits included) as one coordinate file
        per micrograph in ``folder`` (the import directory of :meth:`apply`)."""
        import shutil

        from cryoset.io.coords import write_coords

        scores = self.scores()
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for p in self.micrograph_paths():
            from cryoset.workflows.pick import micrograph_key

            key = micrograph_key(p.name)
            mine = scores[scores["key"] == key][["micrograph", "x_px", "y_px", "score"]].reset_index(drop=True)
            mine["micrograph"] = p.name
            write_coords(folder / f"{key}.star", mine)
        return folder

    def pick_params(self, body: dict[str, Any], candidates: Path) -> Any:
        """The :class:`~cryoset.workflows.pick.PickParams` of an apply: the project's pick
        parameters, the imported candidates and the thresholds of ``body``."""
        from cryoset.workflows.pick import PickParams

        p = self.pick_record()["parameters"]
        min_ncc = _number(body, "min_ncc", required=False)
        min_power = _number(body, "min_power", required=False)
        max_power = _number(body, "max_power", required=False)
        max_res = _number(body, "max_ctf_resolution_a", required=False)
        ctf = None
        if max_res is not None:
            if self.ctf_dir is None or not (self.ctf_dir / "micrographs_ctf.star").is_file():
                raise RequestError("rejecting by CTF fit resolution needs the CTF step's micrographs_ctf.star")
            ctf = self.ctf_dir / "micrographs_ctf.star"
        return PickParams(
            diameter_a=float(p["diameter_a"]), pixel_size_a=self.pick_pixel_size_a(), method="import",
            import_dir=candidates, min_distance_fraction=float(p.get("min_distance_fraction") or 0.5),
            min_ncc=min_ncc, min_power=min_power, max_power=max_power,
            mask_dir=Path(p["mask_dir"]) if p.get("mask_dir") else None, ctf=ctf,
            max_ctf_resolution_a=max_res, light_particles=not p.get("dark_particles", True),
            format=str(p.get("format") or "star"))

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """Re-inspect every candidate with the thresholds of ``body`` through ``run_pick``."""
        from cryoset.workflows.pick import run_pick

        assert self.picks_dir is not None
        with self.lock:
            cand = self.candidates(self.root / CACHE_DIR / "candidates")
            params = self.pick_params(body, cand)
            # the candidates were read: copy them beside the picks so provenance stays resolvable
            keep = self.root / CACHE_DIR / f"candidates-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6}"
            cand.rename(keep)
            params = self.pick_params(body, keep)
            if params.pixel_size_a is not None:
                from cryoset.io.atomic import write_text_atomic

                write_text_atomic(self.root / CACHE_DIR / PIXEL_SIZE_FILE,
                                  json.dumps({"pixel_size_a": params.pixel_size_a}) + "\n")
            outcome = run_pick(self.micrograph_paths(), self.picks_dir, params, progress=False)
            record = {k: getattr(params, k) for k in ("min_ncc", "min_power", "max_power", "max_ctf_resolution_a")}
            self.log("apply thresholds", {**record, "candidates": str(keep), "picks": outcome.picks,
                                          "rejected": outcome.rejected})
        return {"picks": outcome.picks, "rejected": outcome.rejected, "candidates": str(keep)}

    # ------------------------------------------------------------------ classes
    def _classes(self) -> Path:
        if self.classes_dir is None:
            raise RequestError("this project has no 2D classes (no folder whose provenance.json says 'classify2d')")
        return self.classes_dir

    def classes(self) -> dict[str, Any]:
        import numpy as np
        import pandas as pd

        from cryoset.io import relion_labels as L
        from cryoset.io.particles import read_particles

        d = self._classes()
        stats = pd.read_csv(d / "classes.csv")
        table = read_particles(d / "particles.star").table
        cls = table["class_number"].to_numpy(np.int64)
        selection = self.class_selection()
        out = []
        for r in stats.to_dict("records"):
            j = int(r["class_number"])
            rows = cls == j
            ess = table.loc[rows, L.CRYOSET_POSE_ESS] if L.CRYOSET_POSE_ESS in table else table.loc[rows, "ess"]
            eca = table.loc[rows, L.CRYOSET_CLASS_ECA] if L.CRYOSET_CLASS_ECA in table else table.loc[rows, "eca"]
            out.append({"class_number": j, "population": int(r["population"]),
                        "resolution_a": _finite(r["resolution_a"]), "mean_power": _finite(r["mean_power"]),
                        "ess": _finite(pd.to_numeric(ess).mean()) if rows.any() else None,
                        "eca": _finite(pd.to_numeric(eca).mean()) if rows.any() else None,
                        "verdict": str(r["verdict"]), "keep": j in selection["keep"],
                        "recovered": (int(pd.to_numeric(table.loc[rows, L.CRYOSET_RECOVERED]).sum())
                                      if L.CRYOSET_RECOVERED in table else 0)})
        recovered = (int(pd.to_numeric(table[L.CRYOSET_RECOVERED]).sum())
                     if L.CRYOSET_RECOVERED in table else 0)
        kept = int(pd.to_numeric(table[L.CRYOSET_KEPT]).sum()) if L.CRYOSET_KEPT in table else 0
        store = self.classes_store()
        return {"classes": out, "particles": len(table), "kept": kept, "recovered": recovered,
                "keep_recovered": selection["keep_recovered"], "recovered_classes": selection["recovered_classes"],
                "version": _version(d / "particles_kept.star"), "selected_by": selection.get("by"),
                "store": None if store is None else str(store["root"])}

    def classes_store(self) -> dict[str, Any] | None:
        """The store the classification read (``classify2d --store``: its provenance), or None."""
        return classes_store(self._classes())

    def recovery(self) -> dict[str, Any]:
        """The particles the recovery pass took back from junk classes, by the class they came
        from: their scores (max. probability, ESS, ECA), position and kept flag, and whether the
        saved selection accepts each class's recovery."""
        import numpy as np
        import pandas as pd

        from cryoset.io import relion_labels as L
        from cryoset.io.particles import read_particles

        d = self._classes()
        stats = pd.read_csv(d / "classes.csv")
        verdicts = {int(j): str(v) for j, v in zip(stats["class_number"], stats["verdict"], strict=True)}
        table = read_particles(d / "particles.star").table
        selection = self.class_selection()
        n = len(table)
        rec = (pd.to_numeric(table[L.CRYOSET_RECOVERED]).to_numpy(np.int64) == 1 if L.CRYOSET_RECOVERED in table
               else np.zeros(n, bool))
        kept = (pd.to_numeric(table[L.CRYOSET_KEPT]).to_numpy(np.int64) == 1 if L.CRYOSET_KEPT in table
                else np.zeros(n, bool))
        cls = table["class_number"].to_numpy(np.int64)

        def values(*names: str) -> list[float | None]:
            for name in names:
                if name in table:
                    return [_finite(v) for v in table[name]]
            return [None] * n

        ess, eca, prob = values(L.CRYOSET_POSE_ESS, "ess"), values(L.CRYOSET_CLASS_ECA, "eca"), values("max_prob")
        xs, ys = values("x_px"), values("y_px")
        mics = table["micrograph"].astype(str).tolist() if "micrograph" in table else [None] * n
        groups = []
        for j in sorted({int(c) for c in cls[rec]}):
            rows = np.flatnonzero(rec & (cls == j))
            particles = [{"row": int(i), "micrograph": mics[i], "x_px": xs[i], "y_px": ys[i],
                          "max_prob": prob[i], "ess": ess[i], "eca": eca[i], "kept": bool(kept[i])} for i in rows]
            groups.append({"class_number": j, "verdict": verdicts.get(j, ""), "population": int((cls == j).sum()),
                           "recovered": len(rows), "accepted": j in selection["recovered_classes"],
                           "particles": particles})
        return {"classes": groups, "recovered": int(rec.sum()), "keep": selection["keep"],
                "recovered_classes": selection["recovered_classes"],
                "version": _version(d / "particles_kept.star")}

    def class_selection(self) -> dict[str, Any]:
        """The last selection written by the app, else the junk rule's verdict."""
        import pandas as pd

        d = self._classes()
        sel = d / CLASS_SELECTION
        every = recovered_class_numbers(d)
        if sel.is_file():
            data = json.loads(sel.read_text())
            given = data.get("recovered_classes")
            accepted = ([int(k) for k in given] if given is not None
                        else every if bool(data["keep_recovered"]) else [])
            return {"keep": [int(k) for k in data["keep"]], "keep_recovered": bool(data["keep_recovered"]),
                    "recovered_classes": accepted, "by": {"user": data.get("user"), "utc": data.get("utc")}}
        stats = pd.read_csv(d / "classes.csv")
        return {"keep": [int(j) for j, v in zip(stats["class_number"], stats["verdict"], strict=True) if v == "good"],
                "keep_recovered": True, "recovered_classes": every}

    def class_image(self, j: int) -> bytes:
        import io

        import numpy as np
        from PIL import Image

        from cryoset.io.images import scale_to_uint8
        from cryoset.io.mrc import read_stack

        st = read_stack(self._classes() / "class_averages.mrcs")
        if not 1 <= j <= st.data.shape[0]:
            raise RequestError(f"no class {j}: the classes are 1…{st.data.shape[0]}")
        u8 = scale_to_uint8(np.asarray(st.data[j - 1], dtype=np.float32))
        img = Image.fromarray(u8).resize((128, 128), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    def select_classes(self, body: dict[str, Any]) -> dict[str, Any]:
        """Keep the particles of the classes in ``body["keep"]`` and the recovered ones of the
        classes in ``body["recovered_classes"]`` (when given; else every recovered particle when
        ``keep_recovered``): rewrite the classes folder's particle files (and the store's kept
        flags when the classification read a store)."""
        keep = body.get("keep")
        if not isinstance(keep, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in keep):
            raise RequestError("'keep' must be a list of class numbers")
        keep_recovered = body.get("keep_recovered", True)
        if not isinstance(keep_recovered, bool):
            raise RequestError("'keep_recovered' must be true or false")
        recovered_classes = body.get("recovered_classes")
        if recovered_classes is not None and (
                not isinstance(recovered_classes, list)
                or not all(isinstance(k, int) and not isinstance(k, bool) for k in recovered_classes)):
            raise RequestError("'recovered_classes' must be a list of class numbers (those whose recovered "
                               "particles are kept)")
        version = body.get("version")
        if not isinstance(version, str):
            raise RequestError("'version' (the version of the selection you edited) is required")
        d = self._classes()
        with self.lock:
            if _version(d / "particles_kept.star") != version:
                raise Conflict("the class selection changed since you loaded it (another tab or process "
                               "saved it): reload to see the saved selection, then choose again")
            kept = write_class_selection(d, keep, keep_recovered=keep_recovered, recovered_classes=recovered_classes)
            self.log("select classes", {"keep": sorted(keep), "keep_recovered": keep_recovered,
                                        "recovered_classes": recovered_classes, "kept": kept})
        return self.classes()

    # ------------------------------------------------------------------ log
    def _provenance(self, command: str, record: dict[str, Any], inputs: list[Path]) -> dict[str, Any]:
        from cryoset.provenance import make_provenance

        return make_provenance(command, {**record, "user": _user()}, inputs)

    def log(self, action: str, record: dict[str, Any]) -> None:
        """Append one decision (who, when, what) to ``.cryoset-view/log.jsonl``."""
        from cryoset.io.jsontext import json_safe

        path = self.root / CACHE_DIR / "log.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(json_safe({"utc": _utc(), "user": _user(), "action": action, **record}), default=str)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def histogram(values: Any, bins: int = 40) -> dict[str, Any]:
    """Counts of the finite ``values`` over the 0.5–99.5th percentile range (values beyond it
    counted in the end bins, so one outlier does not squeeze the plot): ``edges``, ``counts``."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"edges": [], "counts": []}
    lo, hi = (float(q) for q in np.percentile(v, [0.5, 99.5]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def bin_factor(ny: int, nx: int) -> int:
    """The integer bin that brings the longer side to at most :data:`MAX_RENDER_PX`."""
    return max(1, math.ceil(max(ny, nx) / MAX_RENDER_PX))


def _binned(img: Any, lowpass_a: float) -> Any:
    """Bin a micrograph (block mean) to ≤ :data:`MAX_RENDER_PX` and low-pass it (Gaussian at
    ``lowpass_a``, 0: none)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    data = np.asarray(img.data, dtype=np.float32)
    ny, nx = data.shape
    b = bin_factor(ny, nx)
    my, mx = ny // b, nx // b
    small = data[: my * b, : mx * b].reshape(my, b, mx, b).mean(axis=(1, 3), dtype=np.float32)
    px = float(img.pixel_size_a or 1.0) * b
    if lowpass_a > 2 * px:
        # Gaussian with its 1/e point at the cut-off frequency: sigma = cutoff / (2 pi) · sqrt(2)
        sigma = lowpass_a / px / (math.pi * math.sqrt(2))
        small = gaussian_filter(small, sigma).astype(np.float32)
    return small


def recovered_class_numbers(classes_dir: Path) -> list[int]:
    """The classes some of whose particles the recovery pass took back (``rlnCryosetRecovered``)."""
    import numpy as np

    from cryoset.io import relion_labels as L
    from cryoset.io.particles import read_particles

    table = read_particles(classes_dir / "particles.star").table
    if L.CRYOSET_RECOVERED not in table or not len(table):
        return []
    rec = table[L.CRYOSET_RECOVERED].to_numpy(np.int64) == 1
    return sorted({int(j) for j in table["class_number"].to_numpy(np.int64)[rec]})


def classes_store(classes_dir: Path) -> dict[str, Any] | None:
    """``root`` and ``query`` of the store a ``classify2d --store`` run read (found in its
    provenance: the input ``store.json``), or None for a classification of a STAR file."""
    record = json.loads((classes_dir / "provenance.json").read_text())
    for item in record.get("inputs", []):
        p = Path(str(item.get("path", "")))
        if p.name == "store.json":
            return {"root": p.parent, "query": (record.get("parameters") or {}).get("query")}
    return None


def store_rows(classes_dir: Path, table: Any) -> tuple[Any, Any, Any] | None:
    """The store, and the (experiment id, particle index) of each row of a store-based
    classification's ``particles.star`` (None for a classification of a STAR file).

    ``classify2d --store`` writes its rows in the order
    :func:`cryoset.workflows.particle_images.load_store` reads them (the query's
    :meth:`~cryoset.store.Selection.groups`). The recorded query is run again and checked
    against the STAR (count, micrograph, coordinates), so a store changed since is refused
    (:class:`~cryoset.errors.InputError`) rather than flagged wrongly.
    """
    import numpy as np

    from cryoset.store.dataset import ParticleStore

    found = classes_store(classes_dir)
    if found is None:
        return None
    root = Path(found["root"])
    if not (root / "store.json").is_file():
        raise InputError(root, "the store the classification read is gone: its kept flags cannot be written")
    store = ParticleStore.open(root)
    exps: list[Any] = []
    idxs: list[Any] = []
    for exp, idx in store.select(found["query"]).groups():
        exps.append(np.full(len(idx), exp, dtype=object))
        idxs.append(np.asarray(idx, dtype=np.int64))
    exp_ids = np.concatenate(exps) if exps else np.empty(0, object)
    indices = np.concatenate(idxs) if idxs else np.empty(0, np.int64)
    stale = len(indices) != len(table)
    if not stale:
        for e in sorted(set(exp_ids.tolist())):
            rows = np.flatnonzero(exp_ids == e)
            mine = store.annotations(e).set_index("particle_index").loc[indices[rows]]
            for column in ("x_px", "y_px"):
                if column in mine and column in table and not np.allclose(
                        mine[column].to_numpy(np.float64), table[column].to_numpy(np.float64)[rows], equal_nan=True):
                    stale = True
            if "micrograph" in mine and "micrograph" in table and not np.array_equal(
                    mine["micrograph"].astype(str).to_numpy(), table["micrograph"].astype(str).to_numpy()[rows]):
                stale = True
    if stale:
        raise InputError(root, "its particles no longer match the classification's particles.star (the store "
                         "changed since classify2d ran): its kept flags cannot be written")
    return store, exp_ids, indices


def write_class_selection(classes_dir: Path, keep: list[int], *, keep_recovered: bool = True,
                          recovered_classes: list[int] | None = None) -> int:
    """Rewrite ``particles.star`` (``rlnCryosetKept``), ``particles_kept.star`` and
    ``particles_selected.csv`` of a ``classify2d`` folder for a hand-made class selection, with
    the writers ``classify2d`` uses, and record it in :data:`CLASS_SELECTION`; for a
    classification of a store (``classify2d --store``) also the store's kept flags of its
    particles (:meth:`cryoset.store.ParticleStore.write_selection`: the ``selection`` view).

    A recovered particle (``rlnCryosetRecovered``) is kept when its class is in
    ``recovered_classes`` (when given), else when ``keep_recovered``. Returns the number of
    particles kept."""
    import numpy as np

    from cryoset.io import relion_labels as L
    from cryoset.io.atomic import write_text_atomic
    from cryoset.io.particles import read_particles, write_particles
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.workflows.classify2d import micrograph_heights, write_selected_csv

    star = classes_dir / "particles.star"
    source = read_particles(star)  # its optics and column order are written back as read
    table = source.table
    n_classes = int(table["class_number"].max()) if len(table) else 0
    bad = [k for k in keep if not 1 <= k <= n_classes]
    if bad:
        raise RequestError(f"no class {bad[0]}: the classes are 1…{n_classes}")
    bad = [k for k in recovered_classes or [] if not 1 <= k <= n_classes]
    if bad:
        raise RequestError(f"no class {bad[0]}: the classes are 1…{n_classes}")
    rows = store_rows(classes_dir, table)  # before anything is written: a stale store refuses the whole save
    cls = table["class_number"].to_numpy(np.int64)
    kept = np.isin(cls, np.asarray(keep, dtype=np.int64))
    if L.CRYOSET_RECOVERED in table:
        rec = table[L.CRYOSET_RECOVERED].to_numpy(np.int64) == 1
        if recovered_classes is not None:
            kept |= rec & np.isin(cls, np.asarray(recovered_classes, dtype=np.int64))
        elif keep_recovered:
            kept |= rec
    table[L.CRYOSET_KEPT] = kept.astype(np.int64)
    record: dict[str, Any] = {"keep": sorted(keep), "keep_recovered": keep_recovered, "user": _user()}
    if recovered_classes is not None:
        record["recovered_classes"] = sorted(recovered_classes)
    prov = make_provenance("view select classes", record, [star])
    write_particles(star, replace(source, table=table), provenance=prov)
    write_particles(classes_dir / "particles_kept.star", replace(source, table=table[kept].reset_index(drop=True)),
                    provenance=prov)
    heights, missing = micrograph_heights(table, star)
    write_selected_csv(classes_dir, heights, missing, "micrograph" in table.columns, prov)
    if rows is not None:
        store, exp_ids, indices = rows
        store.write_selection(exp_ids, indices, kept, provenance=prov)
        record["store"] = str(store.root)
    write_text_atomic(classes_dir / CLASS_SELECTION,
                      json.dumps({**record, "utc": _utc(), "kept": int(kept.sum())}, indent=2) + "\n")
    write_provenance(classes_dir / CLASS_SELECTION, prov)
    return int(kept.sum())


def open_project(root: Path) -> Project:
    """The project in ``root``; :class:`~cryoset.errors.InputError` when it holds no step the
    app can show."""
    if not root.exists():
        raise InputError(root, "no such project folder")
    if not root.is_dir():
        raise InputError(root, "is not a folder (give the project folder cryoset demo or build wrote)")
    project = Project(root.resolve())
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        prov = sub / "provenance.json"
        if not prov.is_file():
            continue
        try:
            record = json.loads(prov.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(prov, f"is not a provenance record (not JSON: {exc})") from exc
        command = record.get("command") if isinstance(record, dict) else None
        if command == "pick" and project.picks_dir is None:
            project.picks_dir = sub.resolve()
        elif command == "classify2d" and project.classes_dir is None:
            project.classes_dir = sub.resolve()
        elif command == "ctf" and project.ctf_dir is None:
            project.ctf_dir = sub.resolve()
    if project.picks_dir is None and project.classes_dir is None:
        raise InputError(root, "holds no picks or 2D classes (no sub-folder whose provenance.json says "
                         "'pick' or 'classify2d'): give the folder cryoset demo or build wrote")
    if project.picks_dir is not None:
        try:
            project.micrograph_paths()
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(project.picks_dir / "provenance.json", f"is not a pick record ({exc})") from exc
    return project
