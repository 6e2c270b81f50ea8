"""The interactive Fig 4 explorer: choose a dataset, a test image, an init and an attention head.

``Explorer(params).render(dataset, index, init, head)`` returns a matplotlib Figure (testable without a
browser): the image, then for each backbone (Fig 1's CNN and ViT) its saliency at that init: Grad-CAM for
the CNN, and for the ViT the CLS attention of the chosen head (or the head average, ``"mean"``) beside
its top-50% mask. Models are resolved by :func:`medvit.figures.fig4.saliency_model` (fine-tuned checkpoint,
else the pretrained backbone) and cached; an unavailable model or head gives a panel saying why.
``Explorer.widget()`` builds the ipywidgets UI bound to ``render`` (Jupyter, Colab).
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from .params import Params
from .plots import not_drawn
from .plots.fig4 import draw_saliency, draw_unavailable, show_image
from .plots.tables import INIT_NAMES
from .figures.fig4 import SaliencyModel, load_test_images, saliency_model
from .experiments.inputs import profile_dataset
from .runs import RunUnavailable
from .saliency import saliency_maps


class Explorer:
    """Saliency of Fig 1's backbones on any test image of the saliency datasets, one figure per choice."""

    def __init__(self, params: Params, models=None, inits=None, datasets=None, device="cpu"):
        self.params = params
        self.models = tuple(params.fig1_models if models is None else models)
        self.inits = tuple(params.fig1_inits if inits is None else inits)
        self.datasets = tuple(params.saliency_datasets if datasets is None else datasets)
        if not self.datasets:
            raise ValueError(f"profile {params.profile!r} names no saliency_datasets to explore")
        self.device = device
        self._resolved: dict[tuple[str, str, str], SaliencyModel] = {}
        self._sizes: dict[str, int] = {}

    def num_images(self, dataset: str) -> int:
        """How many test images ``dataset`` has (the index slider's range); 0 when they are not on this machine."""
        if dataset not in self._sizes:
            try:
                self._sizes[dataset] = len(profile_dataset(self.params, dataset, "test"))
            except RunUnavailable:
                self._sizes[dataset] = 0
        return self._sizes[dataset]

    def model(self, dataset: str, name: str, init: str) -> SaliencyModel:
        """The resolved (cached) model for a dataset, backbone and init, or its reason for being unavailable."""
        key = (dataset, name, init)
        if key not in self._resolved:
            self._resolved[key] = saliency_model(self.params, dataset, name, init, self.device)
        return self._resolved[key]

    def num_heads(self, dataset: str, init: str) -> int:
        """The attention heads of the first available ViT for (dataset, init); 0 when there is none."""
        for name in self.models:
            resolved = self.model(dataset, name, init)
            if resolved.available and resolved.model.has_attention:
                batch, _ = load_test_images(self.params, dataset, [0])
                return saliency_maps(resolved.model, batch).num_heads
        return 0

    def render(self, dataset: str, index: int, init: str, head: int | str = "mean") -> plt.Figure:
        """The image, then each backbone's saliency on it at ``init`` (ViTs: ``head`` map and its top-50% mask)."""
        if dataset not in self.datasets:
            raise ValueError(f"unknown dataset {dataset!r}; the explorer shows {self.datasets}")
        if init not in self.inits:
            raise ValueError(f"unknown init {init!r}; the explorer shows {self.inits}")
        try:
            batch, shown = load_test_images(self.params, dataset, [int(index)])
        except RunUnavailable as err:
            return not_drawn("The explorer's view", f"the test images of {dataset} are unavailable: {err}")
        image = shown[0]
        panels = []  # (title, draw(ax))
        panels.append((f"{dataset} test #{index}", lambda ax: show_image(ax, image)))
        for name in self.models:
            resolved = self.model(dataset, name, init)
            label = f"{name} {INIT_NAMES.get(init, init)}"
            if not resolved.available:
                panels.append((label, lambda ax, r=resolved.reason: draw_unavailable(ax, f"unavailable: {r}", 30)))
                continue
            label += ", fine-tuned" if resolved.finetuned else ", backbone only"
            maps = saliency_maps(resolved.model, batch)
            if maps.method == "gradcam":
                panels.append((f"{label}\nGrad-CAM", lambda ax, m=maps: draw_saliency(ax, image, m.maps[0])))
                continue
            try:
                heat, mask = maps.select(head)
            except ValueError as err:
                panels.append((label, lambda ax, e=err: draw_unavailable(ax, f"unavailable: {e}", 30)))
                continue
            which = "mean of heads" if head == "mean" else f"head {head}"
            panels.append((f"{label}\nCLS attention, {which}", lambda ax, h=heat: draw_saliency(ax, image, h[0])))
            panels.append((f"{label}\ntop-50% mask, {which}",
                           lambda ax, h=heat, k=mask: draw_saliency(ax, image, h[0], k[0])))
        fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
        for ax, (title, draw) in zip(axes[0], panels):
            draw(ax)
            ax.set_title(title, fontsize=8)
        fig.tight_layout()
        return fig

    def widget(self):
        """The ipywidgets UI (dataset, image index, init, head) that redraws ``render`` on every change."""
        import ipywidgets as w
        from IPython.display import display

        datasets = [d for d in self.datasets if self.num_images(d)]
        if not datasets:
            return w.HTML(f"No test images of {', '.join(self.datasets)} on this machine: nothing to explore.")
        dataset = w.Dropdown(options=datasets, description="dataset")
        index = w.IntSlider(0, 0, self.num_images(datasets[0]) - 1, description="test image",
                            continuous_update=False)
        init = w.Dropdown(options=self.inits, description="init")
        head = w.Dropdown(options=["mean"], value="mean", description="head")
        out = w.Output()

        def head_options(*_):
            n = self.num_heads(dataset.value, init.value)
            head.options = ["mean", *range(n)]

        def on_dataset(change):
            index.max = self.num_images(change["new"]) - 1
            head_options()

        def redraw(*_):
            with out:
                out.clear_output(wait=True)
                fig = self.render(dataset.value, index.value, init.value, head.value)
                display(fig)
                plt.close(fig)

        head_options()
        dataset.observe(on_dataset, names="value")
        init.observe(head_options, names="value")
        for control in (dataset, index, init, head):
            control.observe(redraw, names="value")
        redraw()
        return w.VBox([w.HBox([dataset, init, head]), index, out])
