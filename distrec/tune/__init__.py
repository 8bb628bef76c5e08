"""Ray Tune sweeps over a run config (`distrec tune`)."""
