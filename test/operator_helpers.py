"""One episode of a perturbed expert policy under the simulated operator (the operator tests)."""

from __future__ import annotations

from apo_ros.sim import OperatorConfig, SimulatedOperator, make_env, make_expert


def run_operator_episode(task: str, seed: int, bad, config: OperatorConfig | None = None, *,
                         max_steps: int | None = None, bad_always: bool = False,
                         stop_on_give_up: bool = False):
    """Run one episode where `bad(step, expert_action) -> action | None` perturbs an otherwise
    expert policy until the first take-over (or always, `bad_always`; None = behave), the
    operator watching. After a hand-back the policy replans from wherever the person left the
    task. Returns (sources per step, operator, succeeded, step at which the policy first went
    wrong or None)."""
    env = make_env(task, render=False, max_steps=max_steps)
    policy = make_expert(task, seed=seed + 100)
    operator = SimulatedOperator(task, config, seed=seed)
    env.reset(seed)
    policy.reset(env)
    operator.reset(env)
    sources: list[str] = []
    went_wrong = None
    done, info = False, {}
    try:
        while not done:
            action = policy.act(env)
            if bad_always or operator.interventions == 0:
                perturbed = bad(env.step_count, action)
                if perturbed is not None:
                    went_wrong = env.step_count if went_wrong is None else went_wrong
                    action = perturbed
            human = operator.step(env, action)
            if stop_on_give_up and operator.gave_up:
                break
            if human is None and sources and sources[-1] == "human":
                policy.replan(env)
            sources.append("human" if human is not None else "policy")
            _obs, _r, terminated, truncated, info = env.step(human if human is not None else action)
            done = terminated or truncated
    finally:
        env.close()
    return sources, operator, bool(info.get("success")), went_wrong
