"""The deployed AFDModule traces: torch.compile(fullgraph=True) and torch.export."""
import torch

from afd_ext import AFDModule


def _module_and_inputs():
    torch.manual_seed(0)
    m = AFDModule(8, width=4, act="relu6").eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    feat = torch.randn(2, 8, 16, 24)
    img = torch.rand(2, 3, 32, 48) * 255
    return m, feat, img


def test_compile_fullgraph_deployed():
    m, feat, img = _module_and_inputs()
    with torch.no_grad():
        expect = m(feat, img)
        m.deploy()
        compiled = torch.compile(m, fullgraph=True, backend="eager")
        out = compiled(feat, img)
    torch.testing.assert_close(out, expect, rtol=1e-4, atol=1e-4)


def test_export_deployed_graph_uses_the_fused_ops():
    m, feat, img = _module_and_inputs()
    with torch.no_grad():
        expect = m(feat, img)
    m.deploy()
    ep = torch.export.export(m, (feat, img))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "afd.block_dct_fdm.default" in targets and "afd.repconv_dedrift.default" in targets
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(feat, img), expect, rtol=1e-4, atol=1e-4)


def test_training_through_the_fused_ops():
    m, feat, img = _module_and_inputs()
    m.fe.last.reparameterize()  # fused path needs the deployed last block
    m.set_impl("fused")
    m.train()
    loss = m(feat, img).square().mean()
    loss.backward()
    assert m.fde.fc1.weight.grad is not None and m.fde.fc1.weight.grad.abs().sum() > 0
    assert m.fe.last.conv.weight.grad.abs().sum() > 0
