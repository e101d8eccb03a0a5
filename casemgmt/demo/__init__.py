from casemgmt.demo.seed import DemoSummary, seed_demo

__all__ = ["DemoSummary", "seed_demo"]
