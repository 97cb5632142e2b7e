"""New subject tokens: added to the tokenizer, initialised from the class word, trainable alone."""

import pytest
import torch

from customcrafter.errors import UserError
from customcrafter.prompts import find_tokens, initializer_words, strip_tokens
from customcrafter.subject import SpatialSubjectModule


def test_tokens_are_found_in_order_without_repeats():
    assert find_tokens("a <new1> dog and a <new2> cat with <new1>") == ["<new1>", "<new2>"]
    assert strip_tokens("a <new1> dog  surfing") == "a dog surfing"


def test_initializer_word_is_the_class_word_after_the_token_unless_overridden():
    assert initializer_words("video of a <new1> dog, running") == {"<new1>": "dog"}
    assert initializer_words("a <new1> dog", {"<new1>": "toy"}) == {"<new1>": "toy"}
    with pytest.raises(UserError, match="initializer-word"):
        initializer_words("a photo of <new1>")


def test_several_tokens_get_their_own_embeddings_from_their_words(tiny_model):
    table = tiny_model.token_embedding()
    base_rows = table.weight.detach().clone()
    module = SpatialSubjectModule.create(tiny_model, {"<new1>": "dog", "<new2>": "cat"})
    tok = tiny_model.tokenizer
    for i, word in enumerate(["dog", "cat"]):
        ids = tok(word, add_special_tokens=False).input_ids
        assert torch.allclose(module.embedding.new_embeddings[i], base_rows[ids].mean(0))
    ids = tiny_model.tokenize(["a <new1> and <new2>"])
    assert len(tok("<new1>", add_special_tokens=False).input_ids) == 1
    emb = tiny_model.token_embedding()(ids)
    new1 = tok.convert_tokens_to_ids("<new1>")
    position = ids[0].tolist().index(new1)
    assert torch.equal(emb[0, position], module.embedding.new_embeddings[0].detach())


def test_only_the_new_embeddings_receive_gradients(tiny_model):
    module = SpatialSubjectModule.create(tiny_model, {"<new1>": "dog"})
    context = tiny_model.encode_prompts(["a <new1> dog"])
    context.sum().backward()
    assert module.embedding.new_embeddings.grad is not None
    assert module.embedding.new_embeddings.grad.abs().sum() > 0
    trainable = [n for n, p in tiny_model.text_encoder.named_parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0].endswith("token_embedding.new_embeddings")
