"""Views of result rows: summary tables (`tables`), figures (`plots`), seed 000's representation table
(`probes`), seed 004's trait table (`traits`) and the static HTML page of a sweep (`html`)."""
