"""The customer journey: structured touches (the truth, in the journey store) and the «Путь клиента» lines
rendered from them."""
