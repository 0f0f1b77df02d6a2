"""Task-type evaluation with exact answers: probe items (knowledge and reasoning), greedy generation, scoring."""
