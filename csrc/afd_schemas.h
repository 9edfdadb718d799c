// The afd op schemas, written once: csrc/ops.cpp registers them in the afd namespace,
// kernels/emu/emu_launchers.cpp in afd_emu, and afd_ext/ops.py reads this file when the compiled
// extension is missing (tests/test_redteam_ops.py checks that they all agree).
// One op per line, `#define AFD_SCHEMA_<OP> "<schema>"`: afd_ext/ops.py parses that form.
#pragma once

#define AFD_SCHEMA_BLOCK_DCT "block_dct(Tensor img) -> Tensor"
#define AFD_SCHEMA_BLOCK_DCT_GATE "block_dct_gate(Tensor img, Tensor weight, Tensor bias) -> Tensor"
#define AFD_SCHEMA_BLOCK_DCT_FDM "block_dct_fdm(Tensor img, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor w3, Tensor b3, Tensor? gate=None) -> Tensor"
#define AFD_SCHEMA_FE_CONV "fe_conv(Tensor x, Tensor? skip, Tensor weight, Tensor? bias, Tensor alpha, bool pool) -> Tensor"
#define AFD_SCHEMA_REPCONV_DEDRIFT "repconv_dedrift(Tensor x, Tensor weight, Tensor? bias, Tensor fdm, Tensor feat, str act, Tensor? skip=None) -> Tensor"
