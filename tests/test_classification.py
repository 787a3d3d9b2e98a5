"""The classifier: LoRA on Q and V starts at zero, eq. 4's weighting, selection on val, test read once."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datadream_lib import classification, models


def test_fresh_clip_lora_leaves_logits_unchanged_and_targets_q_v_of_both_towers(make_params, demo_run):
    p, run, split = demo_run()
    clip, tokenizer, size = models.load_clip(p)
    head = classification.CLIPClassifier(clip, tokenizer, split.classifier_prompts()).eval()
    images = torch.randn(3, 3, size, size)
    with torch.no_grad():
        before = head(images)
    trainable = classification.add_clip_lora(clip, p.clf_lora_rank, p.clf_lora_alpha, p.clf_lora_dropout)
    head.eval()
    with torch.no_grad():
        after = head(images)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    wrapped = [m for m in clip.modules() if isinstance(m, classification.LoRAMultiheadAttention)]
    n_blocks = len(clip.visual.transformer.resblocks) + len(clip.transformer.resblocks)
    assert len(wrapped) == n_blocks and len(trainable) == 4 * n_blocks
    assert all(q.requires_grad for q in trainable)
    assert not clip.logit_scale.requires_grad
    assert sum(q.requires_grad for q in clip.parameters()) == len(trainable)


def test_lora_attention_matches_torch_mha_with_masks():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    lora = classification.LoRAMultiheadAttention(mha, rank=4, alpha=8, dropout=0.0).eval()
    x = torch.randn(2, 5, 16)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    for mask in (None, causal, causal.isinf()):
        torch.testing.assert_close(lora(x, x, x, attn_mask=mask)[0], mha(x, x, x, attn_mask=mask, need_weights=False)[0],
                                   rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        lora.lora_B_q.normal_()
    assert not torch.allclose(lora(x, x, x)[0], mha(x, x, x, need_weights=False)[0])


def test_lambda_weighted_loss_is_eq_4():
    torch.manual_seed(0)
    lr_, ls = torch.randn(4, 3), torch.randn(6, 3)
    yr, ys = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 0, 1, 2])
    got = classification.mixed_loss(lr_, yr, ls, ys, 0.8)
    want = 0.8 * F.cross_entropy(lr_, yr) + 0.2 * F.cross_entropy(ls, ys)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(classification.mixed_loss(lr_, yr, ls, ys, 1.0), F.cross_entropy(lr_, yr))
    torch.testing.assert_close(classification.mixed_loss(None, None, ls, ys, 0.8), F.cross_entropy(ls, ys))
    soft = F.one_hot(ys, 3).float()
    torch.testing.assert_close(classification.mixed_loss(lr_, yr, ls, soft, 0.8), want)


def test_warmup_then_cosine_to_min_lr():
    f = classification.lr_lambda(total_steps=100, warmup_steps=10, base_lr=1e-4, min_lr=1e-8)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(1e-4)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_selection_on_val_and_the_test_split_read_exactly_once(demo_run, monkeypatch):
    p, run, split = demo_run(clf_epochs=3, clf_warmup_epochs=1)
    reads = {}
    real_load = classification.load_rgb

    def counting(path):
        reads[path] = reads.get(path, 0) + 1
        return real_load(path)

    monkeypatch.setattr(classification, "load_rgb", counting)
    metrics = classification.train_and_evaluate(p, "real_finetune", split, [], progress=False)
    test_paths = {path for path, _ in split.test}
    assert all(reads.get(path) == 1 for path in test_paths)  # the test split: once, at the end
    assert all(reads.get(path) == p.clf_epochs for path, _ in split.val)  # val: once per epoch
    val_curve = [h["val_top1"] for h in metrics["history"]]
    assert metrics["best_epoch"] == int(np.argmax(val_curve)) + 1
    assert metrics["val_top1"] == max(val_curve)
    assert metrics["selected_on"] == "val" and metrics["test_evaluations"] == 1
    assert set(metrics["per_class"]) == set(split.classnames)


def test_selected_weights_are_the_best_val_epoch(demo_run, monkeypatch):
    p, run, split = demo_run(clf_epochs=3, clf_warmup_epochs=1)
    val_scores = iter([50.0, 90.0, 10.0])  # epoch 2 is the best on val
    states = []
    real_predict, real_state = classification.predict, classification.CLIPClassifier.lora_state

    def fake_val(model, loader, device, amp):
        preds, labels = real_predict(model, loader, device, amp)
        if len(labels) == len(split.val) and len(states) < 3:
            score = next(val_scores)
            n = int(round(score / 100 * len(labels)))
            preds = np.where(np.arange(len(labels)) < n, labels, (labels + 1) % 4)
            states.append(real_state(model))
        return preds, labels

    monkeypatch.setattr(classification, "predict", fake_val)
    captured = {}
    real_fit = classification.fit

    def fit_and_capture(model, *args, **kwargs):
        out = real_fit(model, *args, **kwargs)
        captured["final"] = real_state(model)
        return out

    monkeypatch.setattr(classification, "fit", fit_and_capture)
    metrics = classification.train_and_evaluate(p, "real_finetune", split, [], progress=False)
    assert metrics["best_epoch"] == 2
    for key, value in captured["final"].items():
        torch.testing.assert_close(value, states[1][key])
    assert any(not torch.equal(captured["final"][k], states[2][k]) for k in captured["final"])


def test_classifier_learns_the_toy_data(demo_run):
    p, run, split = demo_run(clf_epochs=15, clf_warmup_epochs=1, clf_lr=3e-3, mix_aug_prob=0.0, shots=16,
                             images_per_class=32, ablation_images_per_class=[8])
    metrics = classification.train_and_evaluate(p, "real_finetune", split, [], progress=False)
    losses = [h["train_loss"] for h in metrics["history"]]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])  # chance level is ln 4 = 1.39
    assert metrics["top1"] >= 50.0  # 4 classes: chance is 25 %


def test_synthetic_settings_need_synthetic_images(demo_run):
    from datadream_lib.errors import DataDreamError

    p, run, split = demo_run()
    with pytest.raises(DataDreamError, match="needs synthetic images"):
        classification.train_and_evaluate(p, "synthetic", split, [], progress=False)
