"""Beam search in the text codec against a plain implementation that recomputes every prefix, and the
codec's saved default decoding."""

import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet
from diled.codecs.text import TextCodec, train_bpe

SENTENCES = ["the movie was bad and boring.", "what a great film, i loved it.", "the flight was late again.",
             "best customer service i have had in years.", "my bag was lost on the way home."]


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    tok = str(train_bpe(SENTENCES * 5, 300, tmp_path_factory.mktemp("tok")))
    torch.manual_seed(0)
    codec = TextCodec(latent_dim=8, tokenizer=tok, max_length=16,
                      decoder_config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 32})
    # trained briefly, so that sentences end (EOS) after a few tokens, some within the test's limit, some not
    batch, z = codec.collate(SENTENCES), torch.randn(len(SENTENCES), 8, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        codec.reconstruction_loss(batch, z).mean().backward()
        opt.step()
    codec.trained_latents = z
    return codec.eval()


@torch.no_grad()
def plain_beam(codec, z1, k, length_penalty, steps, no_repeat=0):
    """One latent's beam search written out: every prefix recomputed, candidates sorted in Python."""
    beams, ended = [(0.0, [])], []
    for pos in range(steps):
        cands = []
        for score, seq in beams:
            ids = torch.tensor([[codec.bos_id] + seq])
            logp = codec.decoder_logits(ids, torch.ones_like(ids), z1)[0, -1].float().log_softmax(-1)
            for t in range(logp.shape[0]):
                gram = tuple(seq[len(seq) - no_repeat + 1:]) + (t,) if no_repeat else None
                seen = {tuple(seq[i:i + no_repeat]) for i in range(len(seq) - no_repeat + 1)} if no_repeat else ()
                if gram not in seen:
                    cands.append((score + float(logp[t]), seq, t))
        cands.sort(key=lambda c: -c[0])
        beams = []
        for rank, (score, seq, t) in enumerate(cands[:2 * k]):
            if t == codec.eos_id:
                if rank < k:
                    ended.append((score / (pos + 1) ** length_penalty, seq))
            elif len(beams) < k:
                beams.append((score, seq + [t]))
        if len(ended) >= k:
            break
    return max(ended, key=lambda e: e[0])[1] if ended else beams[0][1]


@pytest.mark.parametrize("k,length_penalty,no_repeat", [(3, 1.0, 0), (4, 0.0, 0), (2, 0.6, 2)])
def test_beam_search_equals_the_plain_one(codec, k, length_penalty, no_repeat):
    z = codec.trained_latents + torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    opts = dict(strategy="beam", num_beams=k, length_penalty=length_penalty, max_new_tokens=12,
                no_repeat_ngram=no_repeat)
    fast = codec.decode_ids(z, **opts)
    plain = [plain_beam(codec, z[i:i + 1], k, length_penalty, 12, no_repeat) for i in range(5)]
    assert fast == plain
    lengths = [len(s) for s in fast]
    assert min(lengths) < 12 and max(lengths) == 12  # some ended, some ran to the limit
    # a latent's result does not depend on its batch
    assert [codec.decode_ids(z[i:i + 1], **opts)[0] for i in (0, 2)] == [fast[0], fast[2]]


def test_one_beam_is_greedy_and_bad_beam_options_are_named(codec):
    z = torch.randn(3, 8)
    assert codec.decode_ids(z, strategy="beam", num_beams=1) == codec.decode_ids(z)
    with pytest.raises(ValueError, match="num_beams must be an integer >= 1, got 0"):
        codec.decode(z, strategy="beam", num_beams=0)
    with pytest.raises(ValueError, match="length_penalty must be a number in"):
        codec.decode(z, strategy="beam", length_penalty=float("nan"))


def test_saved_default_decoding(codec, tmp_path):
    cfg = codec.get_config()
    assert "decoding" not in cfg  # unset: greedy, and a config as before
    beam = TextCodec.from_config({**cfg, "decoding": {"strategy": "beam", "num_beams": 3, "length_penalty": 0.5}})
    beam.load_state_dict(codec.state_dict())
    beam.eval()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    by_beam = codec.decode(z, strategy="beam", num_beams=3, length_penalty=0.5)
    assert beam.decode(z) == by_beam
    assert beam.decode(z, strategy="greedy") == codec.decode(z)  # what a call passes wins
    model = DiLED(beam, MLPSkipNet(8, hidden=16, depth=1, time_dim=8), LatentDiffusion("linear", 50)).eval()
    loaded = DiLED.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.codec.decoding == {"strategy": "beam", "num_beams": 3, "length_penalty": 0.5}
    assert loaded.codec.decode(z) == by_beam
    for bad, match in [({"beams": 3}, r"decoding: unknown key\(s\) \['beams'\]"),
                       ({"strategy": "sample"}, "decoding.strategy must be 'greedy' or 'beam'"),
                       ({"num_beams": 2.5}, "num_beams must be an integer >= 1, got 2.5"),
                       ({"no_repeat_ngram": -1}, "decoding.no_repeat_ngram must be an integer >= 0, got -1")]:
        with pytest.raises(ValueError, match=match):
            TextCodec.from_config({**cfg, "decoding": bad})
