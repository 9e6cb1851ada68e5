"""The image score of an anomaly map: :mod:`.rule` describes it (what an architecture declares and the stages
that only read it import), :mod:`.maps` computes it (a torch module in every detector; numpy for stored maps)."""
