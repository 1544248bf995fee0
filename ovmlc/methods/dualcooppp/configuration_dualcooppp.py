"""Configuration of DualCoOp++ (Hu, Sun, Sclaroff & Saenko, IEEE TPAMI; arXiv 2308.01890)."""

from ovmlc.methods.dualcoop.configuration_dualcoop import DualCoOpConfig


class DualCoOpPPConfig(DualCoOpConfig):
    r"""
    DualCoOp++: DualCoOp with a third learned prompt per label, the *evidential* one, whose spatial response gives the
    aggregation weights of the positive and negative logits, and a parameter-free Winner-Take-All (WTA) step across
    labels in training. Fields are those of `DualCoOpConfig` plus:

    winner_take_all (`bool`): in training, regions compete across the labels scored together: each label's evidence
        at a region is weighted by its share of that region (`g_{c,r} + log softmax_c(g_{:,r} / wta_temperature)`
        before the spatial softmax), so a region that clearly shows another label adds little to this label. Off at
        inference (scores stay independent per label).
    wta_temperature (`float`): temperature of the across-label softmax (on the evidential logits `g = 20 * cos`).
    """

    model_type = "ovmlc_dualcooppp"

    winner_take_all: bool = True
    wta_temperature: float = 1.0

    def __post_init__(self, **kwargs):
        if not float(self.wta_temperature) > 0:
            raise ValueError(f"DualCoOpPPConfig.wta_temperature must be > 0, got {self.wta_temperature!r}")
        super().__post_init__(**kwargs)


__all__ = ["DualCoOpPPConfig"]
