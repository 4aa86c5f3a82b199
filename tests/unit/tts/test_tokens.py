from bastion_edge.one_shot_tokens import TokenRegistry


def test_token_is_one_shot() -> None:
    registry: TokenRegistry[str] = TokenRegistry()
    token = registry.issue("job")
    assert registry.take(token) == "job"
    assert registry.take(token) is None


def test_unknown_and_missing_tokens_rejected() -> None:
    registry: TokenRegistry[str] = TokenRegistry()
    registry.issue("job")
    assert registry.take("guess") is None and registry.take(None) is None and len(registry) == 1


def test_tokens_expire_unused() -> None:
    now = [100.0]
    registry: TokenRegistry[str] = TokenRegistry(60.0, clock=lambda: now[0])
    token = registry.issue("job")
    now[0] += 61
    assert registry.take(token) is None and len(registry) == 0


def test_tokens_are_unguessable_and_distinct() -> None:
    registry: TokenRegistry[int] = TokenRegistry()
    tokens = {registry.issue(i) for i in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 40 for t in tokens)
