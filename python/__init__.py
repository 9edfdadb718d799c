"""afd_ext.reference: the pure-PyTorch definition of every afd op."""
from .constants import (ACT_CODES, ACTIVATIONS, BLOCK, GATE_EPS, N_COEFF, N_DCT_CHANNELS, YCBCR_MATRIX,
                        YCBCR_OFFSET, ZIGZAG, dct_basis_zigzag, dct_matrix, ycbcr_matrix)
from .functional import (apply_act, block_dct, block_dct_fdm, block_dct_gate, block_idct, conv3x3, conv_input,
                         dedrift, fde_net, fe_conv, gate_statistics, gate_value, repconv_dedrift, rgb_to_ycbcr,
                         upsample2, upsample_fdm, ycbcr_to_rgb)
from . import checks  # noqa: F401
from .repconv import fold_bn, repconv, repconv_reparam

__all__ = [
    "ACT_CODES", "ACTIVATIONS", "BLOCK", "GATE_EPS", "N_COEFF", "N_DCT_CHANNELS", "YCBCR_MATRIX", "YCBCR_OFFSET",
    "ZIGZAG", "dct_basis_zigzag", "dct_matrix", "ycbcr_matrix", "rgb_to_ycbcr", "ycbcr_to_rgb", "block_dct",
    "block_idct", "block_dct_gate", "gate_statistics", "gate_value", "fde_net", "block_dct_fdm", "apply_act",
    "upsample_fdm", "dedrift",
    "repconv_dedrift", "upsample2", "conv_input", "conv3x3", "fe_conv", "repconv", "repconv_reparam", "fold_bn",
]
